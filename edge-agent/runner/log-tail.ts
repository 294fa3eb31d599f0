/** Keeps the last `limit` bytes of a task's output (stdout and stderr as they arrive), for reports. */
export class LogTail {
  private chunks: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly limit: number) {}

  append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.chunks.length > 1 && this.bytes - (this.chunks[0]?.length ?? 0) >= this.limit) {
      this.bytes -= this.chunks.shift()?.length ?? 0;
    }
  }

  /** The tail as text. The cut may fall inside a UTF-8 character: its orphaned continuation bytes are dropped. */
  toString(): string {
    const tail = Buffer.concat(this.chunks).subarray(-this.limit);
    let start = 0;
    while (start < tail.length && start < 3 && ((tail[start] ?? 0) & 0xc0) === 0x80) start++;
    return tail.subarray(start).toString('utf8');
  }
}
