/**
 * Aligned text tables for human output, and fitting them to the terminal.
 *
 * Fitting is simple and predictable: when a table is wider than the width
 * allowed, the widest of the columns the caller marked shrinkable gives up one
 * character, again and again, until the table fits or every shrinkable column
 * is down to its floor (its header, and at least {@link MIN_COLUMN_WIDTH}).
 * Columns not marked (a name, a short flag) are never cut, so a table whose
 * first column is a unique name never shows two rows alike. A cut cell ends in
 * "…": either its start is kept (`end`) or its start and end (`middle`, for ids
 * such as `app-20261123T101500` whose tail tells them apart).
 */

/** How a cell too long for its column is shortened. */
export type Cut = 'end' | 'middle'

export interface TableFit {
  /** The longest line allowed; Infinity leaves every column whole. */
  width: number
  /** The columns (by header) that may be narrowed, and how their cells are cut; other columns never are. */
  shrink: Readonly<Record<string, Cut>>
}

export const ELLIPSIS = '…'
/** A narrowed column keeps at least this many characters, or its header's length if longer. */
export const MIN_COLUMN_WIDTH = 5
const GAP = '  '

/**
 * The width human output should fit: `$COLUMNS` when it is set to a positive
 * whole number (so a script or a test can ask for a width), else the
 * terminal's width when stdout is a terminal, else no limit: output piped to a
 * file or another program gets whole lines.
 */
export function terminalWidth(
  env: Readonly<Record<string, string | undefined>> = process.env,
  stdout: { isTTY?: boolean; columns?: number } = process.stdout,
): number {
  const columns = env.COLUMNS === undefined ? Number.NaN : Number(env.COLUMNS)
  if (Number.isInteger(columns) && columns > 0) return columns
  if (stdout.isTTY === true && stdout.columns !== undefined && stdout.columns > 0) return stdout.columns
  return Number.POSITIVE_INFINITY
}

/** `text` in at most `width` characters, cut as `how` says with "…" standing for what was left out. */
export function shorten(text: string, width: number, how: Cut = 'end'): string {
  if (text.length <= width) return text
  if (width <= 1) return ELLIPSIS.slice(0, Math.max(0, width))
  const room = width - 1
  if (how === 'end') return `${text.slice(0, room)}${ELLIPSIS}`
  const head = Math.ceil(room / 2)
  return `${text.slice(0, head)}${ELLIPSIS}${text.slice(text.length - (room - head))}`
}

/**
 * The widths of columns whose cells are at most `natural` wide, narrowed to
 * fit `fit.width` as the module comment describes.
 */
export function fitColumnWidths(
  headers: readonly string[],
  natural: readonly number[],
  fit: TableFit,
): number[] {
  const widths = [...natural]
  const floor = headers.map((h) => Math.max(MIN_COLUMN_WIDTH, h.length))
  let excess = widths.reduce((sum, w) => sum + w, 0) + GAP.length * (widths.length - 1) - fit.width
  while (excess > 0) {
    let widest = -1
    for (const [i, h] of headers.entries()) {
      const w = widths[i] as number
      if (
        fit.shrink[h] !== undefined &&
        w > (floor[i] as number) &&
        (widest < 0 || w > (widths[widest] as number))
      )
        widest = i
    }
    if (widest < 0) break // every shrinkable column is at its floor: the line stays longer
    widths[widest] = (widths[widest] as number) - 1
    excess--
  }
  return widths
}

/** Renders rows as an aligned text table; with `fit`, narrowed to its width as far as it allows. */
export function table(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  fit?: TableFit,
): string {
  const natural = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const widths = fit === undefined ? natural : fitColumnWidths(headers, natural, fit)
  const fmt = (r: readonly string[]) =>
    r
      .map((c, i) => {
        const w = widths[i] ?? c.length
        return shorten(c, w, fit?.shrink[headers[i] ?? ''] ?? 'end').padEnd(w)
      })
      .join(GAP)
      .trimEnd()
  return [fmt(headers), ...rows.map(fmt)].join('\n')
}
