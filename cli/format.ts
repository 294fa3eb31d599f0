/**
 * Human output building blocks: colours, aligned tables, durations, relative times, sizes. Pure
 * functions of their arguments (the clock is passed in), so tests pin the exact text.
 */

/** Colour functions; each is the identity when colours are off. */
export interface Style {
  bold(text: string): string;
  dim(text: string): string;
  red(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
  cyan(text: string): string;
}

const sgr =
  (open: number, close: number) =>
  (text: string): string =>
    `\u001b[${open}m${text}\u001b[${close}m`;

const identity = (text: string): string => text;

/** Colours go to terminals only, and never when the user opted out with NO_COLOR (no-color.org). */
export function createStyle(enabled: boolean): Style {
  if (!enabled)
    return { bold: identity, dim: identity, red: identity, green: identity, yellow: identity, cyan: identity };
  return {
    bold: sgr(1, 22),
    dim: sgr(2, 22),
    red: sgr(31, 39),
    green: sgr(32, 39),
    yellow: sgr(33, 39),
    cyan: sgr(36, 39),
  };
}

// C0 controls, DEL, C1 controls (0x9b is a one-byte CSI on some terminals) and the bidirectional
// overrides and isolates, which reorder what a terminal shows.
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what this pattern finds.
const controlPattern = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * `text` with every control character written out as a visible escape (`\x1b`, `\u202e`), so that
 * text from the API (job names, error messages, log tails written by a node) cannot move the
 * cursor, recolour, retitle or clear the user's terminal. Characters in `keep` (newline and tab
 * for multi-line text) pass through.
 *
 * @example escapeControl('a\u001b[2Jb') // 'a\\x1b[2Jb'
 */
export function escapeControl(text: string, keep = ''): string {
  return text.replace(controlPattern, (ch) => {
    if (keep.includes(ch)) return ch;
    const code = ch.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** A copy of `value` (an API object) with {@link escapeControl} applied to every string in it. */
export function escapeControlDeep<T>(value: T): T {
  if (typeof value === 'string') return escapeControl(value) as T;
  if (Array.isArray(value)) return value.map((item) => escapeControlDeep(item)) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [escapeControl(k), escapeControlDeep(v)])) as T;
  }
  return value;
}

// Matches the SGR sequences createStyle emits; widths are measured without them.
// biome-ignore lint/suspicious/noControlCharactersInRegex: ESC is exactly what this pattern finds.
const ansiPattern = /\u001b\[[0-9;]*m/g;

/** `text` without its colour escapes. */
export const stripColours = (text: string): string => text.replace(ansiPattern, '');

/** Printed width of `text`: its length without colour escapes. */
export const visibleWidth = (text: string): number => stripColours(text).length;

/** Cuts `text` to `max` characters, marking the cut with an ellipsis. Expects text without escapes. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}

/** A table column: its header, alignment (numbers read best right-aligned) and optional width cap. */
export interface Column {
  header: string;
  align?: 'left' | 'right';
  /** Longer plain cells are truncated with an ellipsis, so one long name cannot wreck the layout. */
  maxWidth?: number;
}

/**
 * Formats rows as a table: a header line, columns separated by two spaces, no trailing blanks.
 * Cells may carry colour escapes; they do not count toward the widths.
 */
export function formatTable(
  columns: readonly Column[],
  rows: readonly (readonly string[])[],
  style: Style = createStyle(false),
): string {
  const cells = rows.map((row) =>
    columns.map((column, i) => {
      const cell = row[i] ?? '';
      return column.maxWidth !== undefined && visibleWidth(cell) === cell.length
        ? truncate(cell, column.maxWidth)
        : cell;
    }),
  );
  const widths = columns.map((column, i) =>
    Math.max(column.header.length, ...cells.map((row) => visibleWidth(row[i] ?? ''))),
  );
  const line = (row: readonly string[], decorate: (text: string) => string = identity): string =>
    row
      .map((cell, i) => {
        const pad = ' '.repeat((widths[i] ?? 0) - visibleWidth(cell));
        return columns[i]?.align === 'right' ? pad + decorate(cell) : decorate(cell) + pad;
      })
      .join('  ')
      .trimEnd();
  const header = line(
    columns.map((c) => c.header),
    style.bold,
  );
  return [header, ...cells.map((row) => line(row))].join('\n');
}

/** Formats `key value` pairs with the values aligned, for single-object views. */
export function formatDetails(
  pairs: readonly (readonly [string, string])[],
  style: Style = createStyle(false),
): string {
  const width = Math.max(0, ...pairs.map(([key]) => key.length));
  return pairs.map(([key, value]) => `${style.dim(key.padEnd(width))}  ${value}`.trimEnd()).join('\n');
}

const second = 1000;
const minute = 60 * second;
const hour = 60 * minute;
const day = 24 * hour;

/** A duration in its two largest units: `850ms`, `12s`, `3m 04s`, `1h 02m`, `2d 3h`. */
export function formatDuration(ms: number): string {
  const abs = Math.max(0, Math.round(ms));
  if (abs < second) return `${abs}ms`;
  if (abs < minute) return `${Math.floor(abs / second)}s`;
  const two = (n: number): string => String(n).padStart(2, '0');
  if (abs < hour) return `${Math.floor(abs / minute)}m ${two(Math.floor((abs % minute) / second))}s`;
  if (abs < day) return `${Math.floor(abs / hour)}h ${two(Math.floor((abs % hour) / minute))}m`;
  return `${Math.floor(abs / day)}d ${Math.floor((abs % day) / hour)}h`;
}

/**
 * How long ago (or ahead) `time` is from `now`, in one unit: `just now`, `42s ago`, `5m ago`,
 * `in 2h`. Beyond a month the calendar date says more than a count of days.
 */
export function formatRelativeTime(time: string | number, now: number): string {
  const at = typeof time === 'number' ? time : Date.parse(time);
  if (Number.isNaN(at)) return String(time);
  const delta = now - at;
  const abs = Math.abs(delta);
  if (abs < 5 * second) return 'just now';
  if (abs >= 30 * day) return new Date(at).toISOString().slice(0, 10);
  const amount =
    abs < minute
      ? `${Math.floor(abs / second)}s`
      : abs < hour
        ? `${Math.floor(abs / minute)}m`
        : abs < day
          ? `${Math.floor(abs / hour)}h`
          : `${Math.floor(abs / day)}d`;
  return delta >= 0 ? `${amount} ago` : `in ${amount}`;
}

/** A size given in MiB, in the largest binary unit that keeps it readable: `512 MiB`, `80 GiB`, `1.5 TiB`. */
export function formatMiB(mib: number): string {
  const units = ['MiB', 'GiB', 'TiB'] as const;
  let value = mib;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const text = Number.isInteger(value) ? String(value) : value.toFixed(1).replace(/\.0$/, '');
  return `${text} ${units[unit]}`;
}

const vendorPrefix = /^(nvidia|amd|intel|apple)\s+/i;
const sizeToken = /\d[GT]B$/i;

/**
 * A GPU model as people say it: vendor prefix dropped, cut after its memory size
 * (`NVIDIA H100 80GB HBM3` → `H100 80GB`), or with the size appended when the model has none
 * (`NVIDIA GeForce RTX 4090` + 24564 MiB → `GeForce RTX 4090 24GB`).
 */
export function shortGpuModel(model: string, vramMiB: number): string {
  const words = model.trim().replace(vendorPrefix, '').split(/\s+/);
  const sizeAt = words.findIndex((word) => sizeToken.test(word));
  if (sizeAt >= 0) return words.slice(0, sizeAt + 1).join(' ');
  return vramMiB > 0 ? `${words.join(' ')} ${Math.round(vramMiB / 1024)}GB` : words.join(' ');
}

/** Counts GPUs per short model, in order of first appearance: `2x H100 80GB, 1x A100 40GB`; `-` for none. */
export function summarizeGpus(gpus: readonly { model: string; vramMiB: number }[]): string {
  const counts = new Map<string, number>();
  for (const gpu of gpus) {
    const name = shortGpuModel(gpu.model, gpu.vramMiB);
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  if (counts.size === 0) return '-';
  return [...counts].map(([name, count]) => `${count}x ${name}`).join(', ');
}

/** The first 12 hex digits of a hash: enough to compare results by eye. */
export const shortHash = (hash: string): string => hash.slice(0, 12);

/** An argv as a shell would need it typed, for display: `sh -c 'echo hello'`. */
export function shellQuote(argv: readonly string[]): string {
  return argv.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`)).join(' ');
}
