/** A parsed CSV table: one record per data row, keyed by normalised header name. */
export interface CsvRecords {
  header: string[];
  records: Map<string, string>[];
  /** Rows whose cell count differs from the header's: their columns cannot be trusted, so they are left out. */
  skippedRows: number;
}

/**
 * Reads CSV as the GPU tools print it: the first line is the header, blank lines are ignored,
 * cells are trimmed, and double quotes (which rocm-smi uses around cells holding commas) are honoured.
 */
export function readCsvRecords(lines: readonly string[], normaliseHeader: (name: string) => string): CsvRecords {
  const [headerLine, ...rows] = lines.filter((line) => line.trim() !== '');
  if (headerLine === undefined) return { header: [], records: [], skippedRows: 0 };
  const header = splitCsvLine(headerLine).map(normaliseHeader);
  const records: Map<string, string>[] = [];
  let skippedRows = 0;
  for (const row of rows) {
    const cells = splitCsvLine(row);
    if (cells.length !== header.length) {
      skippedRows++;
      continue;
    }
    records.push(new Map(header.map((name, column) => [name, cells[column] ?? ''])));
  }
  return { header, records, skippedRows };
}

/** Splits one CSV line into trimmed cells. */
export function splitCsvLine(line: string): string[] {
  const cells: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const char = line[i];
    if (quoted) {
      if (char === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (char === '"') {
        quoted = false;
      } else {
        cell += char;
      }
    } else if (char === '"') {
      quoted = true;
    } else if (char === ',') {
      cells.push(cell.trim());
      cell = '';
    } else {
      cell += char;
    }
  }
  cells.push(cell.trim());
  return cells;
}

/**
 * A cell's value, or undefined when the tool says it has none: empty, `N/A`, or anything wholly in
 * brackets (`[N/A]`, `[Not Supported]`, `[Insufficient Permissions]`, ...).
 */
export function presentValue(cell: string | undefined): string | undefined {
  const value = cell?.trim();
  if (value === undefined || value === '' || /^n\/a$/i.test(value) || /^\[.*\]$/.test(value)) return undefined;
  return value;
}

/** The lines of a tool's output, whatever its line endings. */
export function outputLines(text: string): string[] {
  return text.split(/\r?\n/);
}
