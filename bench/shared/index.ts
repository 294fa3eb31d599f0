export * from './fleet.js';
export * from './random.js';
export * from './traces.js';
