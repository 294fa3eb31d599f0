import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/** One Lambda function of the synthesised template, with the folder `cdk deploy` would zip for it. */
export interface BundledFunction {
  /** The construct's id under its parent, e.g. `Api`, `Scheduler`. */
  name: string;
  /** The asset folder in the cloud assembly: exactly what would be uploaded. */
  assetDir: string;
  /** `index.handler`. */
  handler: string;
  /** `nodejs22.x`. */
  runtime: string;
  architectures: string[];
  timeoutSeconds: number;
  memoryMb: number;
  /**
   * The environment variables whose values are fixed at synth time (NODE_OPTIONS, POWERTOOLS_*,
   * timings); those that CloudFormation resolves at deploy time (table name, queue URLs, key ARN)
   * are left out, for the deployment under test to give.
   */
  literalEnvironment: Record<string, string>;
}

export interface SynthesisedApp {
  /** The cloud assembly folder (a fresh temporary one). */
  dir: string;
  functions: Map<string, BundledFunction>;
  /** Removes the cloud assembly. */
  remove(): Promise<void>;
}

const repoRoot = resolve(import.meta.dirname, '../..');
const cdkCli = join(repoRoot, 'node_modules/.bin/cdk');

interface TemplateResource {
  Type: string;
  Properties: {
    Handler?: string;
    Runtime?: string;
    Architectures?: string[];
    Timeout?: number;
    MemorySize?: number;
    Environment?: { Variables?: Record<string, unknown> };
  };
  Metadata?: Record<string, unknown>;
}

/**
 * Runs the real `cdk synth` (the CLI, which runs infra/app.ts as cdk.json says, bundling every
 * function with esbuild) into a fresh folder under the system's temporary directory, and reads
 * which asset folder belongs to which function. The folder has no node_modules above it, so a
 * bundle that needs a module it left out fails here as it would on Lambda.
 */
export async function synthesise(): Promise<SynthesisedApp> {
  const dir = await mkdtemp(join(tmpdir(), 'gpuai-bundles-cdk-out-'));
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    await runCdkSynth(dir);
    const stackTemplate = (await readdir(dir)).find((file) => file.endsWith('.template.json'));
    if (stackTemplate === undefined) throw new Error(`cdk synth wrote no template into ${dir}`);
    const template = JSON.parse(await readFile(join(dir, stackTemplate), 'utf8')) as {
      Resources: Record<string, TemplateResource>;
    };
    const functions = new Map<string, BundledFunction>();
    for (const resource of Object.values(template.Resources)) {
      if (resource.Type !== 'AWS::Lambda::Function') continue;
      const fn = bundledFunction(dir, resource);
      if (fn !== undefined) functions.set(fn.name, fn);
    }
    return { dir, functions, remove };
  } catch (error) {
    await remove();
    throw error;
  }
}

/** A bundled function of the template; undefined for one without a bundled asset (CDK's own helpers). */
function bundledFunction(dir: string, resource: TemplateResource): BundledFunction | undefined {
  const metadata = resource.Metadata ?? {};
  const assetPath = metadata['aws:asset:path'];
  const constructPath = metadata['aws:cdk:path'];
  if (typeof assetPath !== 'string' || typeof constructPath !== 'string') return undefined;
  // `Gpuai/Workers/Api/Resource` -> `Api`.
  const name = constructPath.split('/').at(-2) ?? constructPath;
  const { Properties: p } = resource;
  const literalEnvironment = Object.fromEntries(
    Object.entries(p.Environment?.Variables ?? {}).filter(
      (entry): entry is [string, string] => typeof entry[1] === 'string',
    ),
  );
  return {
    name,
    assetDir: join(dir, assetPath),
    handler: p.Handler ?? 'index.handler',
    runtime: p.Runtime ?? '',
    architectures: p.Architectures ?? ['x86_64'],
    timeoutSeconds: p.Timeout ?? 3,
    memoryMb: p.MemorySize ?? 128,
    literalEnvironment,
  };
}

/** `cdk synth` to `outdir`, quietly; its output is in the error when it fails. */
function runCdkSynth(outdir: string): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn(cdkCli, ['synth', '--quiet', '--no-notices', '--no-version-reporting', '--output', outdir], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, CI: 'true' },
    });
    const output: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => output.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => output.push(chunk));
    child.on('error', fail);
    child.on('close', (code) =>
      code === 0
        ? done()
        : fail(new Error(`cdk synth exited with ${code}:\n${Buffer.concat(output).toString().slice(-8000)}`)),
    );
  });
}
