/**
 * Result keys: an X25519 key pair whose public half a job names at submit (`resultKey`), so the
 * node seals the job's log tails and progress messages to it and only the holder of the private
 * half reads them (`gpuai jobs logs --key FILE`). Stored as a JWK (RFC 8037: kty OKP, crv X25519),
 * the private file mode 0600.
 */
import { writeFile } from 'node:fs/promises';
import { z } from 'zod';
import {
  generateSealingKeyPair,
  isSealedText,
  openResultText,
  type ResultSealContext,
  SealingPublicKey,
  sealingPublicKeyOf,
} from '../protocol/index.js';
import type { CommandContext } from './context.js';
import { UsageError } from './errors.js';

const Raw = z.string().regex(/^[A-Za-z0-9_-]{43}$/);
const KeyFile = z.object({ kty: z.literal('OKP'), crv: z.literal('X25519'), x: Raw, d: Raw.optional() });

async function readKeyFile(ctx: CommandContext, flag: string, path: string): Promise<z.infer<typeof KeyFile> | string> {
  let text: string;
  try {
    text = (await ctx.io.readFile(path)).trim();
  } catch (error) {
    const code = error instanceof Error && 'code' in error ? String(error.code) : String(error);
    throw new UsageError(`${flag} ${path}: cannot read it (${code})`);
  }
  if (SealingPublicKey.safeParse(text).success) return text;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError(`${flag} ${path}: expected an X25519 JWK (gpuai jobs keygen) or a base64url public key`);
  }
  const parsed = KeyFile.safeParse(json);
  if (!parsed.success) throw new UsageError(`${flag} ${path}: not an X25519 JWK (kty OKP, crv X25519)`);
  return parsed.data;
}

/**
 * The public key for `--result-key`: the key itself as `gpuai jobs keygen` printed it (43
 * base64url characters), else a key file (private or public JWK, or a file holding the bare key).
 */
export async function readResultPublicKey(ctx: CommandContext, value: string): Promise<string> {
  const trimmed = value.trim();
  if (SealingPublicKey.safeParse(trimmed).success) return trimmed;
  let key: Awaited<ReturnType<typeof readKeyFile>>;
  try {
    key = await readKeyFile(ctx, '--result-key', value);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    throw new UsageError(
      `${error.message}; --result-key takes a key file or the public key gpuai jobs keygen printed (43 base64url characters)`,
    );
  }
  return typeof key === 'string' ? key : key.x;
}

/** The private key for `--key`: a JWK with `d` whose `x` matches it. */
export async function readResultPrivateKey(ctx: CommandContext, path: string): Promise<string> {
  const key = await readKeyFile(ctx, '--key', path);
  if (typeof key === 'string' || key.d === undefined) {
    throw new UsageError(`--key ${path} holds a public key only; pass the private key file gpuai jobs keygen wrote`);
  }
  if (sealingPublicKeyOf(key.d) !== key.x) throw new UsageError(`--key ${path}: its x does not match its d`);
  return key.d;
}

/** Writes a new key pair to `path` (mode 0600, never over an existing file); returns the public key. */
export async function writeNewResultKey(path: string): Promise<string> {
  const { publicKey, privateKey } = generateSealingKeyPair();
  const jwk = { kty: 'OKP', crv: 'X25519', x: publicKey, d: privateKey };
  try {
    await writeFile(path, `${JSON.stringify(jwk, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    const code = error instanceof Error && 'code' in error ? String(error.code) : String(error);
    throw new UsageError(`cannot write ${path} (${code})${code === 'EEXIST' ? ': it exists, and is kept' : ''}`);
  }
  return publicKey;
}

/**
 * A log tail or message as the control plane holds it, opened when it is sealed and a key is
 * given. `undefined` text stays undefined; a sealed text without a key, or one the key does not
 * open, is described instead of shown.
 */
export async function openedText(
  text: string | undefined,
  privateKey: string | undefined,
  ctx: ResultSealContext,
): Promise<{ text?: string; sealed: 'no' | 'opened' | 'no-key' | 'wrong-key' }> {
  if (text === undefined || !isSealedText(text)) return { ...(text === undefined ? {} : { text }), sealed: 'no' };
  if (privateKey === undefined) return { sealed: 'no-key' };
  try {
    return { text: await openResultText(privateKey, text, ctx), sealed: 'opened' };
  } catch {
    return { sealed: 'wrong-key' };
  }
}
