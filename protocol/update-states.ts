/**
 * The states of an agent's update, as status reports carry them (the state
 * machine is drawn in agent/updater.ts). Apart from messages.ts, which
 * re-exports them, so that file stays within the size limit.
 */
export const UPDATE_STATES = [
  'idle',
  'downloading',
  'verified',
  /** Downloaded and prepared; activation waits for a maintenance window (maintenance-window.ts). */
  'waiting-for-window',
  'activating',
  'confirming',
  'committed',
  'rolling-back',
  'rolled-back',
  'failed',
  'refused',
] as const
export type UpdateState = (typeof UPDATE_STATES)[number]
