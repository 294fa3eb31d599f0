import { cloudLifecycleSuite } from './lifecycle-suite.js';

// Design 2 of docs/cost-model.md: agents long-poll their pools' SQS queues with STS credentials
// and claim through the API; the same lifecycle must hold, an agent killed mid-task included.
cloudLifecycleSuite('sqs');
