/**
 * Placement: which node a task goes to, by predicted completion, over a fleet index that lets a
 * decision look at a handful of nodes instead of all of them. Pure: no store, no clock but the
 * `now` it is given. docs/placement.md tells the design and its measured figures.
 */
export { type FleetEntry, FleetIndex, type FleetNode, tierOf } from './fleet-index.js';
export { fullScanGreedy } from './full-scan.js';
export { placeTask } from './place-task.js';
export { defaultSearchBudget, type Placement, type PlacementTask, type PlaceOptions } from './placement.js';
