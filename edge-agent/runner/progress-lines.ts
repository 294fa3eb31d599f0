import { StringDecoder } from 'node:string_decoder';

/** What a task said about itself with `::progress <0-100> [message]` lines on stdout. */
export interface ProgressMark {
  percent: number;
  message?: string;
}

/** Longest line inspected; longer lines cannot be progress marks and are skipped without being buffered. */
const maxLineChars = 4096;
const maxMessageChars = 1024;
const progressLine = /^::progress\s+(\d{1,3}(?:\.\d+)?)(?:\s+(.*))?$/;

/** Parses one line; undefined when it is not a well-formed progress mark. */
export function parseProgressLine(line: string): ProgressMark | undefined {
  const match = progressLine.exec(line.replace(/\r$/, ''));
  if (match?.[1] === undefined) return undefined;
  const percent = Number(match[1]);
  if (percent > 100) return undefined;
  const message = match[2]?.trim().slice(0, maxMessageChars);
  return message ? { percent, message } : { percent };
}

/** Splits a byte stream into lines and reports each progress mark found, across chunk boundaries. */
export class ProgressLineScanner {
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';
  private skippingLongLine = false;

  constructor(private readonly onMark: (mark: ProgressMark) => void) {}

  push(chunk: Buffer): void {
    const lines = (this.partial + this.decoder.write(chunk)).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!this.skippingLongLine) this.scan(line);
      this.skippingLongLine = false;
    }
    if (this.partial.length > maxLineChars) {
      this.partial = '';
      this.skippingLongLine = true;
    }
  }

  /** The process closed stdout: a last line without a newline still counts. */
  end(): void {
    const rest = this.partial + this.decoder.end();
    this.partial = '';
    if (!this.skippingLongLine && rest !== '') this.scan(rest);
  }

  private scan(line: string): void {
    const mark = parseProgressLine(line);
    if (mark !== undefined) this.onMark(mark);
  }
}
