export * from './canonical-json.js';
export * from './common.js';
export * from './envelope.js';
export * from './job.js';
export * from './node.js';
export * from './result-hash.js';
export * from './signing.js';
export * from './task.js';
