/**
 * What applying a fleet file would change: each machine of the file compared
 * with the machine the coordinator knows (enrolled or not, its tags, the
 * generation it runs or is being given), and each enrolled machine the file
 * does not list. `fleetmesh plan` prints it; `fleetmesh apply` carries it out.
 */
import type { MachineView } from '../protocol/index.ts'
import { channelPolicy, predictWaves } from './fleet-channel.ts'
import type { FleetFile } from './fleet-file.ts'
import { type ResolvedMachine, tagsOf } from './fleet-resolve.ts'

export type PlanAction =
  /** In the file, not enrolled: apply issues an enrollment token */
  | 'enroll'
  /** Enrolled, and its tags or generation differ from the file's */
  | 'change'
  /** Enrolled, not in the file */
  | 'unlisted'
  | 'none'

export interface MachinePlan {
  machine: string
  action: PlanAction
  enrolled: boolean
  /** The tags the file gives it */
  tags: string[]
  /** Tags to add and to remove (for a new machine, the tags its token will carry) */
  tagsAdded: string[]
  tagsRemoved: string[]
  channel: string | null
  /** The generation the machine runs, or is already being given (null: none, or not enrolled) */
  current: string | null
  /** Its channel's generation (null: no channel) */
  desired: string | null
  /** Whether apply deploys the channel's payload to it now */
  deploy: boolean
  /** The wave (from 1) of its channel's rollout it is planned in; null without waves or deploy */
  wave: number | null
}

export interface FleetPlan {
  fleet: string | undefined
  machines: MachinePlan[]
  /** Machines apply has something to do for (unlisted ones are shown, not counted: apply leaves them alone) */
  changes: number
}

/** States in which the machine gave up its desired generation: it runs what it ran before. */
const GAVE_UP: ReadonlySet<string> = new Set(['rolled-back', 'failed', 'refused'])

/**
 * The generation a machine runs or is already being given: what a deploy would
 * change. One that gave its desired generation up counts as running its
 * current one, so plan shows it as not converged.
 */
function heading(view: MachineView): string | null {
  if (view.state !== null && GAVE_UP.has(view.state)) return view.currentGeneration
  return view.desiredGeneration ?? view.currentGeneration
}

export function planFleet(file: FleetFile, resolved: ResolvedMachine[], enrolled: MachineView[]): FleetPlan {
  const views = new Map(enrolled.map((m) => [m.name, m]))
  const plans: MachinePlan[] = resolved.map((m) => {
    const view = views.get(m.name)
    const want = tagsOf(m)
    const channel = m.channel.value
    const desired = channel === null ? null : (file.channels[channel]?.generation ?? null)
    const current = view === undefined ? null : heading(view)
    const deploy = view !== undefined && desired !== null && current !== desired
    const tagsAdded = want.filter((t) => !view?.tags.includes(t))
    const tagsRemoved = view === undefined ? [] : view.tags.filter((t) => !want.includes(t)).sort()
    const changed = deploy || tagsAdded.length + tagsRemoved.length > 0
    return {
      machine: m.name,
      action: view === undefined ? 'enroll' : changed ? 'change' : 'none',
      enrolled: view !== undefined,
      tags: want,
      tagsAdded,
      tagsRemoved,
      channel,
      current,
      desired,
      deploy,
      wave: null,
    }
  })
  for (const [name, channel] of Object.entries(file.channels)) {
    const policy = channelPolicy(file, name, channel)
    if (policy === undefined) continue
    const deploying = plans.filter((p) => p.deploy && p.channel === name)
    const waves = predictWaves(
      deploying.map((p) => ({ name: p.machine, tags: p.tags })),
      policy,
    )
    for (const p of deploying) p.wave = waves.get(p.machine) ?? null
  }
  const listed = new Set(resolved.map((m) => m.name))
  for (const view of enrolled)
    if (!listed.has(view.name))
      plans.push({
        machine: view.name,
        action: 'unlisted',
        enrolled: true,
        tags: view.tags,
        tagsAdded: [],
        tagsRemoved: [],
        channel: null,
        current: heading(view),
        desired: null,
        deploy: false,
        wave: null,
      })
  plans.sort((a, b) => a.machine.localeCompare(b.machine))
  return {
    fleet: file.name,
    machines: plans,
    changes: plans.filter((p) => p.action === 'enroll' || p.action === 'change').length,
  }
}

/** One line per machine, for people: what changes, or that nothing does. */
export function formatPlan(plan: FleetPlan): string {
  const lines = plan.machines.map((p) => {
    const parts: string[] = []
    if (p.action === 'enroll') parts.push(`enroll (token with tags ${p.tagsAdded.join(', ') || '(none)'})`)
    if (p.action === 'unlisted') parts.push('enrolled but not in the fleet file (apply leaves it alone)')
    if (p.enrolled && p.tagsAdded.length > 0) parts.push(`tags +${p.tagsAdded.join(' +')}`)
    if (p.tagsRemoved.length > 0) parts.push(`tags -${p.tagsRemoved.join(' -')}`)
    if (p.deploy)
      parts.push(
        `${p.current ?? '(none)'} → ${p.desired} (channel ${p.channel}${p.wave === null ? '' : `, wave ${p.wave}`})`,
      )
    else if (p.action === 'enroll' && p.desired !== null)
      parts.push(`then ${p.desired} (channel ${p.channel}) once it enrolls`)
    const mark = p.action === 'none' ? ' ' : p.action === 'enroll' ? '+' : p.action === 'unlisted' ? '?' : '~'
    return `${mark} ${p.machine.padEnd(20)} ${parts.join('; ') || 'up to date'}`
  })
  const summary =
    plan.changes === 0
      ? 'nothing to do: the fleet matches the file'
      : `${plan.changes} machine${plan.changes === 1 ? '' : 's'} to change`
  return [...lines, '', summary].join('\n')
}
