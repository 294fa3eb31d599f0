export * from './blobs.js';
export * from './clock.js';
export * from './keys.js';
export * from './queue.js';
export * from './signal.js';
export * from './signer.js';
export * from './store.js';
