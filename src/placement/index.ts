// Placement as one import for the API, the planner and the CLI.

export type { ClusterSnapshot, InstanceSnapshot, MemberSnapshot, VolumeSnapshot } from './snapshot.js';
export {
  LoadLedger,
  addPoolBytes,
  poolBytes,
  buildLedger,
  clusterGroupKey,
  clusterGroupOf,
  compareText,
  cpuLimit,
  describeDemand,
  groupMembers,
  indexVolumes,
  instanceDemand,
  listNames,
  localVolumes,
  memberLoadShare,
  memoryLimit,
  pickTarget,
  placeNewInstance,
  placementGroup,
  placementRequest,
  volumeRefs,
} from './placement.js';
export type { Demand, MemberLoad, PickOptions, PickResult, PlacementRequest, VolumeIndex, VolumeRef } from './placement.js';
