/**
 * Shell completion generated from the commands' CommandSpecs, so what the
 * shell offers is exactly what the parser accepts: command names (a group's
 * subcommands as the second word), each command's long options, and for an
 * option's value what its help placeholder promises: the fixed choices of
 * `a|b|c`, directories for `<dir>`, paths for `<file>`, `<path>`, `<x.json>`
 * and paths after an `@` for `@file`; nothing for anything else (a multiaddr,
 * a duration). A command's operand is read the same way from the first word
 * of its usage after the command (`deploy <archive.tar.gz>` takes files).
 * Pure: it returns the script's text; the program's entry point collects the
 * specs and prints it. The shell-specific text lives in completion-bash.ts,
 * completion-zsh.ts and completion-fish.ts.
 */
import type { CommandSpec, OptionDoc, Options } from './cli.ts'
import { bashScript } from './completion-bash.ts'
import { fishScript } from './completion-fish.ts'
import { zshScript } from './completion-zsh.ts'

export const SHELLS = ['bash', 'zsh', 'fish'] as const
export type Shell = (typeof SHELLS)[number]

export function isShell(name: string): name is Shell {
  return (SHELLS as readonly string[]).includes(name)
}

/** What a word completes to. */
export type WordCompletion =
  | { kind: 'none' }
  | { kind: 'choices'; choices: readonly string[] }
  | { kind: 'dirs' }
  | { kind: 'files' }
  /** Paths written after an `@`: a value read from a file ("@file"); nothing without the `@` */
  | { kind: 'at-files' }

export interface CompletionSource {
  /** The program's name as typed, e.g. "fleetmesh" */
  program: string
  /** Every command, each named as typed after the program ("deploy", "admin grant") */
  commands: readonly CommandSpec[]
  /** Options that may come before the command, e.g. --home <dir> */
  globalOptions: Options
  /** The word that takes a command's name and prints its help ("help deploy"), if the program has one */
  helpWord?: string
}

/** A spec holds a name the generated script could not embed safely (it would need shell quoting). */
export class CompletionSpecError extends Error {
  override name = 'CompletionSpecError'
}

/** One option as the scripts see it. */
export interface FlagModel {
  /** Without the dashes */
  name: string
  short?: string
  takesValue: boolean
  multiple: boolean
  description: string
  /** The value's placeholder from the spec, e.g. "<dir>" (options that take a value) */
  placeholder: string
  value: WordCompletion
}

export interface CommandModel {
  /** As typed, e.g. "admin grant" */
  name: string
  summary: string
  flags: FlagModel[]
  operand: WordCompletion
  operandPlaceholder: string
}

/** A word that may follow the program (or a group's word), with the line that describes it. */
export interface Word {
  word: string
  description: string
}

/** Everything a shell's script needs, checked to be safe to embed unquoted. */
export interface CompletionModel {
  program: string
  globals: FlagModel[]
  /** The words that may follow the program: commands and groups (not the help word) */
  commands: Word[]
  /** The subcommands of each group, by the group's word */
  groups: Map<string, Word[]>
  /** Every command, including the groups' subcommands */
  specs: CommandModel[]
  helpWord?: string
}

const NONE: WordCompletion = { kind: 'none' }
/** Words the scripts embed without quoting: no spaces, quotes, globs or shell syntax. */
const SAFE_WORD = /^[A-Za-z0-9][\w.-]*$/
/** `a|b|c`: plain words, nothing bracketed, no list syntax such as "p1,p2|none". */
const CHOICES = /^[\w.-]+(\|[\w.-]+)+$/

/**
 * What a value written like `placeholder` in help completes to. Deliberately literal: a
 * placeholder that names a file, path or directory gets paths, `a|b|c` gets its choices, and
 * anything else (a multiaddr, a duration, a machine name) gets nothing rather than a guess.
 */
export function valueCompletion(placeholder: string | undefined): WordCompletion {
  if (placeholder === undefined) return NONE
  if (CHOICES.test(placeholder)) return { kind: 'choices', choices: placeholder.split('|') }
  if (/@file\b/.test(placeholder)) return { kind: 'at-files' }
  if (/<[^>]*\b(dir|directory)>/.test(placeholder)) return { kind: 'dirs' }
  if (/\b(file|path)\b|<[^>]*\.\w+>/.test(placeholder)) return { kind: 'files' }
  return NONE
}

/** The operand in a command's usage: the word right after the command's name, unless it is an option. */
export function operandPlaceholder(program: string, spec: CommandSpec): string | undefined {
  const synopsis = spec.usage.split('\n')[0] ?? ''
  const prefix = `${program} ${spec.name}`
  if (!synopsis.startsWith(`${prefix} `)) return undefined
  return /^(<[^>]*>|[^\s[<-]\S*)/.exec(synopsis.slice(prefix.length + 1))?.[1]
}

function safeWord(word: string, what: string): string {
  if (!SAFE_WORD.test(word))
    throw new CompletionSpecError(
      `cannot generate completion for ${what} "${word}": expected letters, digits, ".", "_" or "-" only`,
    )
  return word
}

function flagModels(options: Options, owner: string): FlagModel[] {
  return Object.entries(options).map(([name, o]: [string, OptionDoc]) => {
    const takesValue = o.type === 'string'
    const value = takesValue ? valueCompletion(o.value) : NONE
    if (value.kind === 'choices') for (const c of value.choices) safeWord(c, `a choice of --${name}`)
    return {
      name: safeWord(name, `an option of ${owner}`),
      ...(o.short !== undefined ? { short: safeWord(o.short, `the short option of --${name}`) } : {}),
      takesValue,
      multiple: o.multiple === true,
      description: o.description,
      placeholder: takesValue ? (o.value ?? '<value>') : '',
      value,
    }
  })
}

/** Every command answers --help (lib/cli.ts parses it before the command's own options). */
const HELP_FLAG: FlagModel = {
  name: 'help',
  short: 'h',
  takesValue: false,
  multiple: false,
  description: 'show this help',
  placeholder: '',
  value: NONE,
}

/** Lower case, no final period: a summary as one row of a listing. */
function listing(summary: string): string {
  return `${summary.charAt(0).toLowerCase()}${summary.slice(1)}`.replace(/\.$/, '').split('\n')[0] ?? ''
}

export function completionModel(source: CompletionSource): CompletionModel {
  const program = safeWord(source.program, 'the program')
  const commands: Word[] = []
  const groups = new Map<string, Word[]>()
  const names = source.commands.map((spec) => spec.name)
  const twice = names.find((name, i) => names.indexOf(name) !== i)
  if (twice !== undefined)
    throw new CompletionSpecError(
      `two commands are named "${twice}": pass only the one the program routes to`,
    )
  const specs = source.commands.map((spec): CommandModel => {
    const words = spec.name.split(' ').map((w) => safeWord(w, 'the command'))
    const [first, second, ...more] = words
    if (first === undefined || more.length > 0)
      throw new CompletionSpecError(`cannot complete the command "${spec.name}": expected one or two words`)
    if (second === undefined) commands.push({ word: first, description: listing(spec.summary) })
    else {
      if (!groups.has(first)) groups.set(first, [])
      groups.get(first)?.push({ word: second, description: listing(spec.summary) })
    }
    const placeholder = operandPlaceholder(program, spec) ?? ''
    const operand = valueCompletion(placeholder || undefined)
    if (operand.kind === 'choices') for (const c of operand.choices) safeWord(c, `an operand of ${spec.name}`)
    return {
      name: words.join(' '),
      summary: listing(spec.summary),
      flags: [...flagModels(spec.options, spec.name), HELP_FLAG],
      operand,
      operandPlaceholder: placeholder,
    }
  })
  for (const [group, subcommands] of groups) {
    if (commands.some((c) => c.word === group))
      throw new CompletionSpecError(`"${group}" is both a command and a group of commands`)
    commands.push({ word: group, description: subcommands.map((s) => s.word).join(', ') })
  }
  return {
    program,
    globals: flagModels(source.globalOptions, 'the program'),
    commands,
    groups,
    specs,
    ...(source.helpWord !== undefined ? { helpWord: safeWord(source.helpWord, 'the help word') } : {}),
  }
}

/** The completion script for `shell`, to be sourced by it (or put where it loads completions from). */
export function completionScript(shell: Shell, source: CompletionSource): string {
  const model = completionModel(source)
  switch (shell) {
    case 'bash':
      return bashScript(model)
    case 'zsh':
      return zshScript(model)
    case 'fish':
      return fishScript(model)
  }
}
