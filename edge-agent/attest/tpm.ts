import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TpmQuoteEvidence } from '../../protocol/index.js';
import { AgentError } from '../errors.js';

/** tpm2-tools failed (not installed, TPM unreachable, a command refused). */
export class TpmError extends AgentError {
  override name = 'TpmError';
  readonly retryable = false;
}

export interface TpmQuoterOptions {
  /** A TCTI as tpm2-tools take it: `swtpm:host=127.0.0.1,port=2321`, `device:/dev/tpmrm0`. */
  tcti: string;
  /** The agent's data dir; the AK's public key and handle are kept in `<dataDir>/attest/`. */
  dataDir: string;
  /** The persistent handle the AK is kept at (owner hierarchy). */
  akHandle?: string;
  /** The sha256 PCRs to quote. */
  pcrs?: number[];
  /** Per-command time limit. */
  timeoutMs?: number;
}

/** Where the AK lives between agent runs; PCRs 0-7 (firmware, boot loader) by default. */
export const defaultAkHandle = '0x81018000';
export const defaultQuotePcrs = [0, 1, 2, 3, 4, 5, 6, 7];

/**
 * Produces TPM 2.0 quotes with tpm2-tools (5.x). The attestation key (AK) is created once under
 * the endorsement key (`tpm2_createek`, `tpm2_createak`: RSA 2048, RSASSA-SHA256) and made
 * persistent at `akHandle` with `tpm2_evictcontrol`: a saved context of a transient object does
 * not survive a TPM reset (every reboot, or swtpm's `startup-clear`), a persistent handle does.
 * The handle and the AK's public key are recorded in `<dataDir>/attest/tpm-ak.json`. An AK found
 * at the handle is adopted, so a wiped data dir keeps the key the control plane has pinned.
 *
 * Without a resource manager (swtpm, `device:/dev/tpm0`) transient objects pile up and the TPM
 * runs out of slots, so `tpm2_flushcontext -t` runs after every command that loads one.
 *
 * The EK certificate is not sent: checking it against the manufacturer's CA, and proving the AK
 * lives beside that EK (credential activation), is out of scope; the control plane pins the AK to
 * the node on its first quote instead.
 */
export class TpmQuoter {
  private readonly akHandle: string;
  private readonly pcrs: number[];
  private readonly dir: string;
  private akPem: string | undefined;

  constructor(private readonly options: TpmQuoterOptions) {
    this.akHandle = options.akHandle ?? defaultAkHandle;
    this.pcrs = [...(options.pcrs ?? defaultQuotePcrs)].sort((a, b) => a - b);
    this.dir = join(options.dataDir, 'attest');
  }

  /** The AK's public key (SPKI PEM), creating and persisting the AK on first use. */
  async attestationKey(): Promise<string> {
    this.akPem ??= await this.loadOrCreateAk();
    return this.akPem;
  }

  /** A quote over the configured PCRs with `nonceHex` as qualifying data. */
  async quote(nonceHex: string): Promise<TpmQuoteEvidence> {
    if (!/^[0-9a-f]{2,128}$/.test(nonceHex)) throw new TpmError(`not a hex nonce: ${nonceHex}`);
    const akPublicKey = await this.attestationKey();
    const work = join(this.dir, `quote-${randomBytes(6).toString('hex')}`);
    await mkdir(work, { recursive: true, mode: 0o700 });
    try {
      const [msg, sig, pcrFile] = [join(work, 'msg'), join(work, 'sig'), join(work, 'pcrs')];
      await this.tool('tpm2_quote', [
        ...['-c', this.akHandle, '-l', `sha256:${this.pcrs.join(',')}`, '-q', nonceHex],
        ...['-m', msg, '-s', sig, '-o', pcrFile, '-F', 'values', '-g', 'sha256'],
      ]);
      await this.flush();
      const values = await readFile(pcrFile);
      if (values.length !== 32 * this.pcrs.length) {
        throw new TpmError(`tpm2_quote wrote ${values.length} bytes of PCR values for ${this.pcrs.length} PCRs`);
      }
      return {
        type: 'tpm-quote',
        akPublicKey,
        message: (await readFile(msg)).toString('base64'),
        signature: (await readFile(sig)).toString('base64'),
        pcrBank: 'sha256',
        pcrs: this.pcrs.map((index, i) => ({ index, value: values.subarray(i * 32, i * 32 + 32).toString('hex') })),
      };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  private async loadOrCreateAk(): Promise<string> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const pemFile = join(this.dir, 'tpm-ak.pem');
    const existing = await this.readPersistentAk(pemFile);
    if (existing !== undefined) return existing;
    const work = join(this.dir, `create-${randomBytes(6).toString('hex')}`);
    await mkdir(work, { recursive: true, mode: 0o700 });
    try {
      const ek = join(work, 'ek.ctx');
      const ak = join(work, 'ak.ctx');
      await this.tool('tpm2_createek', ['-c', ek, '-G', 'rsa', '-u', join(work, 'ek.pub')]);
      await this.flush();
      await this.tool('tpm2_createak', [
        ...['-C', ek, '-c', ak, '-G', 'rsa', '-g', 'sha256', '-s', 'rsassa'],
        ...['-u', join(work, 'ak.pem'), '-f', 'pem', '-n', join(work, 'ak.name')],
      ]);
      await this.flush();
      await this.tool('tpm2_flushcontext', ['-s']);
      await this.tool('tpm2_evictcontrol', ['-C', 'o', '-c', ak, this.akHandle]);
      await this.flush();
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    const created = await this.readPersistentAk(pemFile);
    if (created === undefined) throw new TpmError(`the AK made persistent at ${this.akHandle} cannot be read back`);
    return created;
  }

  /** Reads the AK at the persistent handle into `pemFile`; undefined when the handle holds nothing. */
  private async readPersistentAk(pemFile: string): Promise<string | undefined> {
    try {
      await this.tool('tpm2_readpublic', ['-c', this.akHandle, '-f', 'pem', '-o', pemFile]);
    } catch {
      await this.flush().catch(() => undefined);
      return undefined;
    }
    await this.flush();
    const pem = await readFile(pemFile, 'utf8');
    await writeFile(
      join(this.dir, 'tpm-ak.json'),
      `${JSON.stringify({ handle: this.akHandle, tcti: this.options.tcti }, null, 2)}\n`,
      { mode: 0o600 },
    );
    return pem;
  }

  /** Flushes transient objects: no resource manager stands between tpm2-tools and swtpm. */
  private flush(): Promise<void> {
    return this.tool('tpm2_flushcontext', ['-t']);
  }

  private tool(file: string, args: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      execFile(
        file,
        args,
        {
          timeout: this.options.timeoutMs ?? 30_000,
          env: { ...process.env, TPM2TOOLS_TCTI: this.options.tcti },
          windowsHide: true,
        },
        (error, _stdout, stderr) => {
          if (error === null) return resolve();
          const detail =
            (error as NodeJS.ErrnoException).code === 'ENOENT'
              ? 'not installed (tpm2-tools)'
              : stderr.trim() || error.message;
          reject(new TpmError(`${file} failed: ${detail.split('\n').slice(0, 3).join(' ')}`));
        },
      );
    });
  }
}
