// `fleetmesh completion bash|zsh|fish` against the real shells: the script the
// real CLI prints is loaded into bash, zsh and fish, each is asked to complete
// command lines, and what it offers is compared with the CommandSpecs the
// parser uses. So a flag missing from completion, a value completed wrongly or
// a script one of the shells rejects fails here. zsh runs interactively in a
// pseudo-terminal (zsh/zpty) with compadd wrapped to print every match it adds.
import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminSpecs } from '../../admin/cli.ts'
import { AGENT_COMMAND } from '../../agent/cli.ts'
import { COORDINATOR_COMMAND } from '../../coordinator/cli.ts'
import { STORE_COMMAND } from '../../coordinator/store-cli.ts'
import { valueCompletion } from '../../lib/completion.ts'
import { type CommandSpec, CompletionSpecError, completionScript, type Shell } from '../../lib/index.ts'
import { RELAY_COMMAND } from '../../relay/cli.ts'
import { type CliResult, fleetmeshArgv, runToCompletion } from '../../testkit/fleetmesh.ts'

/** The commands bin/main.ts runs itself; an admin command of the same name is never reached. */
const OWN: CommandSpec[] = [COORDINATOR_COMMAND, STORE_COMMAND, AGENT_COMMAND, RELAY_COMMAND]
const SPECS: CommandSpec[] = [
  ...OWN,
  ...adminSpecs().filter((s) => !OWN.some((o) => o.name === s.name.split(' ')[0])),
]

function fleetmesh(...args: string[]): Promise<CliResult> {
  return runToCompletion(process.execPath, fleetmeshArgv(args), { timeoutMs: 30_000 })
}

/** The long flags a command's --help documents, as the shell should offer them. */
function flagsOf(spec: CommandSpec): string[] {
  return [...Object.keys(spec.options).map((o) => `--${o}`), '--help']
}

const firstWords = [...new Set(SPECS.map((s) => s.name.split(' ')[0] as string))]
const adminWords = SPECS.filter((s) => s.name.startsWith('admin ')).map((s) => s.name.slice('admin '.length))

/**
 * Command lines (completed at their end) and what every shell must offer for them, in a
 * directory holding the directory "configs" and the file "site.tar.gz".
 */
const CASES: [what: string, line: string, expected: string[]][] = [
  ['a command prefix completes to the command', 'fleetmesh dep', ['deploy']],
  ['the first word offers every command and help', 'fleetmesh ', [...firstWords, 'completion', 'help']],
  ['a group offers its subcommands', 'fleetmesh admin ', adminWords],
  ['a subcommand prefix completes', 'fleetmesh nix pu', ['push']],
  ['help takes a command name', 'fleetmesh help dep', ['deploy']],
  ['help takes a subcommand name', 'fleetmesh help admin ', adminWords],
  ['options before the command', 'fleetmesh --', ['--help', '--home', '--version']],
  ['--home takes a directory', 'fleetmesh --home ', ['configs']],
  ['a command after --home <dir>', 'fleetmesh --home configs dep', ['deploy']],
  ['--activator offers its choices', 'fleetmesh agent --activator ', ['auto', 'nixos', 'profile']],
  ['--activator=<prefix> completes the choice', 'fleetmesh agent --activator=p', ['profile']],
  ['--mode offers its choices', 'fleetmesh deploy --mode ', ['boot', 'switch', 'test']],
  ['a <dir> value completes directories only', 'fleetmesh agent --state ', ['configs']],
  ['a <store path> value completes paths', 'fleetmesh deploy --nix ', ['configs', 'site.tar.gz']],
  ['an @file value completes paths after the @', 'fleetmesh agent --token @', ['@configs', '@site.tar.gz']],
  ['a free-form value completes nothing', 'fleetmesh deploy --to ', []],
  ['deploy <archive.tar.gz> completes paths', 'fleetmesh deploy ', ['configs', 'site.tar.gz']],
  ['completion offers the shells', 'fleetmesh completion ', ['bash', 'fish', 'zsh']],
  // every routed command: the shell offers exactly the flags its spec declares
  ...SPECS.map((s): [string, string, string[]] => [
    `${s.name} offers its flags`,
    `fleetmesh ${s.name} --`,
    flagsOf(s),
  ]),
]

/** Completions as a sorted set: without descriptions, directory slashes or the `--opt=` fish and zsh keep. */
function normalise(lines: readonly string[]): string[] {
  const words = lines
    .map((l) =>
      (l.split('\t')[0] ?? '')
        .trim()
        .replace(/^--[\w-]+=/, '')
        .replace(/\/$/, ''),
    )
    .filter((w) => w.length > 0)
  return [...new Set(words)].sort()
}

/** Splits a driver's output, "### <line>" then that line's completions, into completions by line. */
function byLine(stdout: string): Map<string, string[]> {
  const result = new Map<string, string[]>()
  let current: string[] | undefined
  for (const raw of stdout.replaceAll('\r', '').split('\n')) {
    if (raw.startsWith('### ')) {
      current = []
      result.set(raw.slice(4), current)
    } else current?.push(raw)
  }
  return new Map([...result].map(([line, words]) => [line, normalise(words)]))
}

async function run(command: string, args: string[]): Promise<string> {
  const r = await runToCompletion(command, args, { timeoutMs: 60_000 })
  expect(r.stderr).toBe('')
  expect(r.code).toBe(0)
  return r.stdout
}

// Bash splits at "=" (COMP_WORDBREAKS); the driver does the same, so "--opt=" ends in the word "=".
const BASH_DRIVER = `
source "$1" || exit 1
cd "$2" || exit 1
shift 2
for line in "$@"; do
  read -ra COMP_WORDS <<< "\${line//=/ = }"
  [[ $line == *' ' ]] && COMP_WORDS+=('')
  COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 ))
  COMP_LINE=$line
  COMP_POINT=\${#line}
  COMPREPLY=()
  _fleetmesh fleetmesh "\${COMP_WORDS[COMP_CWORD]}" "\${COMP_WORDS[COMP_CWORD-1]}"
  printf '%s\\n' "### $line" "\${COMPREPLY[@]}"
done
`

const FISH_DRIVER = `
source $argv[1]; or exit 1
cd $argv[2]; or exit 1
for line in $argv[3..-1]
  echo "### $line"
  complete -C "$line"
end
`

// An interactive zsh in a pseudo-terminal: the script is autoloaded from $fpath as an installed
// _fleetmesh would be, each line is typed followed by Tab, and compadd, wrapped, prints every
// match zsh adds (with its ignored prefix, e.g. "@"). The markers are split in the typed text
// so the terminal's echo of a command cannot be mistaken for its output; zsh empties
// comppostfuncs after each completion, so the marker function puts itself back.
const ZSH_DRIVER = `
zmodload zsh/zpty || exit 1
zpty z 'zsh -f -i'
zpty -w z "PS1=''; RPS1=''; bindkey -e; unsetopt auto_list auto_menu list_beep beep"
zpty -w z "cd \${(q)2} && fpath=(\${(q)1} \\$fpath) && autoload -Uz compinit && compinit -u -D"
zpty -w z 'compadd() { local -a hits; builtin compadd -A hits "$@"; (( $#hits )) && print -rl -- "HI""T:$IPREFIX"\${^hits} >&2; builtin compadd "$@" }'
zpty -w z 'comppostfuncs=(done-marker); done-marker() { print -r -- "DO""NE" >&2; comppostfuncs=(done-marker) }'
zpty -w z 'print -r -- "REA""DY"'
out=''
while [[ $out != *READY* ]] && zpty -r z chunk; do out+=$chunk; done
for line in "\${@[3,-1]}"; do
  print -r -- "### $line"
  zpty -w -n z "$line"$'\\t'
  out=''
  while [[ $out != *DONE* ]] && zpty -r z chunk; do out+=$chunk; done
  print -r -- \${(F)\${\${(M)\${(f)out//$'\\r'/}:#*HIT:*}##*HIT:}}
  zpty -w -n z $'\\C-u'
done
zpty -d z
`

function installed(shell: string): boolean {
  return spawnSync(shell, ['-c', 'exit 0']).status === 0
}

/** Completes each line with the script installed as the shell would load it; the driver's output. */
type Drive = (root: string, script: string, lines: string[]) => Promise<string>

const DRIVERS: Record<Shell, Drive> = {
  bash: async (root, script, lines) => {
    await writeFile(join(root, 'fleetmesh.bash'), script)
    const args = ['--norc', '--noprofile', '-c', BASH_DRIVER, 'driver', join(root, 'fleetmesh.bash')]
    return run('bash', [...args, join(root, 'cwd'), ...lines])
  },
  fish: async (root, script, lines) => {
    await writeFile(join(root, 'fleetmesh.fish'), script)
    return run('fish', [
      '--no-config',
      '-c',
      FISH_DRIVER,
      join(root, 'fleetmesh.fish'),
      join(root, 'cwd'),
      ...lines,
    ])
  },
  zsh: async (root, script, lines) => {
    await mkdir(join(root, 'zsh-functions'))
    await writeFile(join(root, 'zsh-functions', '_fleetmesh'), script)
    return run('zsh', [
      '-f',
      '-c',
      ZSH_DRIVER,
      'driver',
      join(root, 'zsh-functions'),
      join(root, 'cwd'),
      ...lines,
    ])
  },
}

/** How each shell loads the script without completing anything; it must print `ok` and nothing on stderr. */
const LOADERS: Record<Shell, (path: string) => string[]> = {
  bash: (path) => [
    'bash',
    '--norc',
    '--noprofile',
    '-c',
    'source "$1" && complete -p fleetmesh >/dev/null && echo ok',
    'load',
    path,
  ],
  fish: (path) => [
    'fish',
    '--no-config',
    '-c',
    'source $argv[1]; and complete -c fleetmesh | string match -q "*"; and echo ok',
    path,
  ],
  // sourced rather than autoloaded: the script registers itself with compdef
  zsh: (path) => [
    'zsh',
    '-f',
    '-c',
    'autoload -Uz compinit && compinit -u -D && source "$1" && [[ $_comps[fleetmesh] == _fleetmesh ]] && echo ok',
    'load',
    path,
  ],
}

for (const shell of ['bash', 'zsh', 'fish'] as const) {
  const missing = !installed(shell)
  if (missing) console.warn(`fleetmesh completion ${shell}: tests skipped: ${shell} is not installed`)

  describe.skipIf(missing)(`fleetmesh completion ${shell} in the real ${shell}`, () => {
    let root: string
    let script: string
    let completions: Map<string, string[]>

    beforeAll(async () => {
      root = await mkdtemp(join(tmpdir(), `fm-completion-${shell}-`))
      await mkdir(join(root, 'cwd', 'configs'), { recursive: true })
      await writeFile(join(root, 'cwd', 'site.tar.gz'), '')
      const r = await fleetmesh('completion', shell)
      expect(r.stderr).toBe('')
      expect(r.code).toBe(0)
      script = r.stdout
      completions = byLine(
        await DRIVERS[shell](
          root,
          script,
          CASES.map(([, line]) => line),
        ),
      )
    }, 120_000)

    afterAll(async () => {
      if (root !== undefined) await rm(root, { recursive: true, force: true })
    })

    it('loads without errors', async () => {
      const path = join(root, `load.${shell}`)
      await writeFile(path, script)
      const [command, ...args] = LOADERS[shell](path)
      expect(await run(command as string, args)).toBe('ok\n')
    })

    for (const [what, line, expected] of CASES) {
      it(`${what}: "${line}"`, () => {
        expect(completions.get(line), `no output for "${line}"`).toEqual([...new Set(expected)].sort())
      })
    }
  })
}

describe('fleetmesh completion errors', () => {
  it('an unknown shell exits 2 naming the shells there are', async () => {
    const r = await fleetmesh('completion', 'tcsh')
    expect(r.code).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain("unknown shell 'tcsh'")
    expect(r.stderr).toContain('bash, zsh, fish')
  })

  it('no shell exits 2 asking for one', async () => {
    const r = await fleetmesh('completion')
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('name the shell')
  })

  it('--help shows how to install the script for each shell', async () => {
    const r = await fleetmesh('completion', '--help')
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('fleetmesh completion bash > /etc/bash_completion.d/fleetmesh')
    expect(r.stdout).toContain('fleetmesh completion zsh > /usr/local/share/zsh/site-functions/_fleetmesh')
    expect(r.stdout).toContain('fleetmesh completion fish > ~/.config/fish/completions/fleetmesh.fish')
  })

  it('a spec name the script could not embed is refused, not quoted wrongly', () => {
    const spec: CommandSpec = {
      name: 'bad',
      summary: 'x',
      usage: 'fleetmesh bad',
      options: { "it's": { type: 'boolean', description: 'x' } },
      examples: [],
    }
    expect(() =>
      completionScript('bash', { program: 'fleetmesh', commands: [spec], globalOptions: {} }),
    ).toThrow(CompletionSpecError)
  })
})

describe('what a value placeholder completes to', () => {
  it.each([
    ['<dir>', { kind: 'dirs' }],
    ['<file.json>', { kind: 'files' }],
    ['<store path>', { kind: 'files' }],
    ['<bundle text | file holding it>', { kind: 'files' }],
    ['<fmtok1…|@file>', { kind: 'at-files' }],
    ['auto|profile|nixos', { kind: 'choices', choices: ['auto', 'profile', 'nixos'] }],
    ['p1,p2|none', { kind: 'none' }],
    ['<machine|tag:name|all>[,...]', { kind: 'none' }],
    ['<multiaddr>', { kind: 'none' }],
    [undefined, { kind: 'none' }],
  ])('%s', (placeholder, expected) => {
    expect(valueCompletion(placeholder)).toEqual(expected)
  })
})
