import { cloudLifecycleSuite } from './lifecycle-suite.js';

cloudLifecycleSuite('long-poll');
