/**
 * Starts and stops the AWS emulators that the AWS adapters are tested against, offline:
 *
 * - **moto** (`moto_server`) serves DynamoDB and SQS from one process;
 * - **local-kms** serves KMS;
 * - small reverse proxies in this process sit in front of moto for DynamoDB and in front of
 *   local-kms, each restoring one behaviour of AWS that its emulator lacks ({@link motoRules},
 *   {@link localKmsRules}).
 *
 * Both emulators are installed into the repository's `.tools/` by `install.sh`, which runs first
 * whenever they are missing or at other versions than it pins. Every server listens on a free
 * loopback port of its own (local-kms on all interfaces: it has no setting for the host), so test
 * runs side by side do not meet.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Agent as HttpAgent, type IncomingMessage, request, type ServerResponse } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Where each emulated service answers. */
export interface EmulatorEndpoints {
  /** The proxy in front of moto. */
  dynamodb: string;
  /** moto itself. */
  sqs: string;
  /** The proxy in front of local-kms. */
  kms: string;
}

export interface RunningEmulators {
  endpoints: EmulatorEndpoints;
  /** Stops every server and removes their data; safe to call twice. */
  stop(): Promise<void>;
}

const here = import.meta.dirname;
const repoRoot = resolve(here, '../..');
const installScript = join(here, 'install.sh');
const motoServer = join(repoRoot, '.tools/venv/bin/moto_server');
const localKmsBinary = join(repoRoot, '.tools/bin/local-kms');

/** How long a server may take to answer its first request (moto needs 1 to 2.5 s on 2 cores). */
const readyTimeoutMs = 30_000;
/** Attempts to start a server, in case another process took its free port in the meantime. */
const startAttempts = 3;

/** Installs the emulators if needed, starts them and waits until each answers. */
export async function startEmulators(): Promise<RunningEmulators> {
  await ensureInstalled();
  const stops: (() => Promise<void>)[] = [];
  // In reverse order of starting: proxies before their servers, servers before their data.
  const stop = async () => {
    for (const stopOne of stops.splice(0).reverse()) {
      await stopOne();
    }
  };
  try {
    const moto = await startServer('moto', (port) => ({
      command: motoServer,
      args: ['-H', '127.0.0.1', '-p', String(port)],
      env: process.env,
    }));
    stops.push(() => moto.stop());

    const kmsData = await mkdtemp(join(tmpdir(), 'gpuai-local-kms-'));
    stops.push(() => rm(kmsData, { recursive: true, force: true }));
    const localKms = await startServer('local-kms', (port) => ({
      command: localKmsBinary,
      args: [],
      // A seed path that does not exist, so a stray /init/seed.yaml on the machine is never loaded.
      env: { ...process.env, PORT: String(port), KMS_DATA_PATH: kmsData, KMS_SEED_PATH: join(kmsData, 'no-seed') },
    }));
    stops.push(() => localKms.stop());

    const motoProxy = await startProxy(moto.port, motoRules);
    stops.push(() => motoProxy.close());
    const kmsProxy = await startProxy(localKms.port, localKmsRules);
    stops.push(() => kmsProxy.close());

    return {
      endpoints: {
        dynamodb: `http://127.0.0.1:${motoProxy.port}`,
        sqs: `http://127.0.0.1:${moto.port}`,
        kms: `http://127.0.0.1:${kmsProxy.port}`,
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * Runs install.sh when `install.sh --check` says a tool is missing or at another version. Its
 * output goes to stderr as it comes, since a first install takes about a minute; a failure throws
 * with that output.
 */
async function ensureInstalled(): Promise<void> {
  if ((await run('bash', [installScript, '--check'])).code === 0) {
    return;
  }
  process.stderr.write('Installing the AWS emulators into .tools/ (once; about a minute)\n');
  const { code, output } = await run('bash', [installScript], (chunk) => process.stderr.write(chunk));
  if (code !== 0) {
    throw new Error(`test/emulators/install.sh failed with exit code ${code}:\n${output}`);
  }
}

/** Runs a command to its end, collecting its stdout and stderr together. */
function run(
  command: string,
  args: string[],
  onOutput?: (chunk: Buffer) => void,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    const collect = (chunk: Buffer) => {
      chunks.push(chunk);
      onOutput?.(chunk);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, output: Buffer.concat(chunks).toString() }));
  });
}

interface ServerCommand {
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

interface StartedServer {
  port: number;
  stop(): Promise<void>;
}

/**
 * Starts a server on a free loopback port and waits until it answers HTTP. A server that exits
 * before answering (its port taken meanwhile, say) is started again on another port, up to
 * {@link startAttempts} times; the last failure carries the server's output.
 */
async function startServer(name: string, commandFor: (port: number) => ServerCommand): Promise<StartedServer> {
  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= startAttempts; attempt++) {
    const port = await freePort();
    const { command, args, env } = commandFor(port);
    const server = new ServerProcess(name, spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] }));
    try {
      await server.ready(`http://127.0.0.1:${port}/`);
      return { port, stop: () => server.stop() };
    } catch (error) {
      await server.stop();
      lastError = error instanceof Error ? error : new Error(String(error));
    }
  }
  throw lastError ?? new Error(`${name} did not start`);
}

/** A child server process, whose recent output is kept for error messages. */
class ServerProcess {
  readonly #name: string;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  #output = '';
  /** Kills the server if the test process exits without stopping it, so no server outlives a run. */
  readonly #killOnExit = () => {
    this.#child.kill('SIGKILL');
  };

  constructor(name: string, child: ChildProcess) {
    this.#name = name;
    this.#child = child;
    // The output must be read even when nobody looks at it: a full pipe would block the server.
    const keep = (chunk: Buffer) => {
      this.#output = (this.#output + chunk.toString()).slice(-8000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.#exited = new Promise((resolveExit) => {
      child.once('exit', () => resolveExit());
      child.once('error', (error) => {
        keep(Buffer.from(`\n${error.message}\n`));
        resolveExit();
      });
    });
    process.once('exit', this.#killOnExit);
  }

  get #running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null && this.#child.pid !== undefined;
  }

  /** Resolves once `url` answers with any HTTP status; rejects if the server exits or times out first. */
  async ready(url: string): Promise<void> {
    const deadline = Date.now() + readyTimeoutMs;
    let exited = false;
    void this.#exited.then(() => {
      exited = true;
    });
    while (Date.now() < deadline) {
      if (exited) {
        throw new Error(`${this.#name} exited before answering:\n${this.#output}`);
      }
      try {
        await fetch(url, { signal: AbortSignal.timeout(1000) });
        return;
      } catch {
        await sleep(100);
      }
    }
    throw new Error(`${this.#name} did not answer ${url} within ${readyTimeoutMs} ms:\n${this.#output}`);
  }

  /** Asks the server to stop, and kills it if it has not within three seconds. */
  async stop(): Promise<void> {
    process.removeListener('exit', this.#killOnExit);
    if (this.#running) {
      this.#child.kill('SIGTERM');
      // An unreferenced timer, so that a prompt exit does not leave the test process waiting on it.
      const gaveUp = sleep(3000, false, { ref: false });
      const killed = await Promise.race([this.#exited.then(() => true), gaveUp]);
      if (!killed) {
        this.#child.kill('SIGKILL');
      }
    }
    await this.#exited;
  }
}

/** A port that was free a moment ago on the loopback interface. */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createNetServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (typeof address === 'object' && address !== null) {
          resolvePort(address.port);
        } else {
          reject(new Error('the OS gave no free port'));
        }
      });
    });
  });
}

/** What a {@link startProxy} does besides relaying requests to its upstream server. */
interface ProxyRules {
  /** Whether a request, by its `x-amz-target` header, waits until the one before it is answered. */
  serialise?: (target: string) => boolean;
  /** An answer to give instead of relaying the request, or undefined to relay it. */
  answer?: (target: string, body: Buffer) => { status: number; body: object } | undefined;
}

/**
 * A reverse proxy on a free loopback port, in front of an emulator on `upstreamPort`. Request
 * bodies are read whole before anything else (the tests' requests are small), so `answer` can
 * look at them. The `x-amz-target` header (`DynamoDB_20120810.PutItem`, `TrentService.Decrypt`, ...)
 * names the service and operation of a JSON-protocol request.
 */
async function startProxy(upstreamPort: number, rules: ProxyRules): Promise<{ port: number; close(): Promise<void> }> {
  const agent = new HttpAgent({ keepAlive: true });
  /** Settles when the serialised request admitted last has been answered. */
  let previous: Promise<void> = Promise.resolve();

  const server = createServer((incoming, outgoing) => {
    const target = String(incoming.headers['x-amz-target'] ?? '');
    const chunks: Buffer[] = [];
    incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
    incoming.on('end', () => {
      const body = Buffer.concat(chunks);
      const answer = rules.answer?.(target, body);
      if (answer !== undefined) {
        outgoing.writeHead(answer.status, { 'content-type': 'application/x-amz-json-1.1' });
        outgoing.end(JSON.stringify(answer.body));
      } else if (rules.serialise?.(target) === true) {
        const turn = previous.then(() => relay(incoming, body, outgoing));
        previous = turn;
      } else {
        void relay(incoming, body, outgoing);
      }
    });
  });

  /** Relays one request upstream; settles, never rejecting, once the client's response is closed. */
  function relay(incoming: IncomingMessage, body: Buffer, outgoing: ServerResponse): Promise<void> {
    return new Promise((done) => {
      if (outgoing.destroyed) {
        // The client gave up while the request waited its turn.
        done();
        return;
      }
      const upstream = request(
        {
          host: '127.0.0.1',
          port: upstreamPort,
          method: incoming.method,
          path: incoming.url,
          headers: incoming.headers,
          agent,
        },
        (answer) => {
          outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(outgoing);
        },
      );
      outgoing.once('close', () => {
        upstream.destroy();
        done();
      });
      upstream.on('error', (error) => {
        if (!outgoing.headersSent) {
          outgoing.writeHead(502, { 'content-type': 'text/plain' });
        }
        outgoing.end(`proxy to the emulator failed: ${error.message}`);
      });
      upstream.end(body);
    });
  }

  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolveListen());
  });
  const address = server.address();
  if (typeof address !== 'object' || address === null) {
    throw new Error('the proxy has no port');
  }
  return {
    port: address.port,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolveClose) => server.close(() => resolveClose()));
      agent.destroy();
    },
  };
}

/**
 * The rules of the proxy in front of moto: one DynamoDB request at a time, every other request
 * (SQS, moto's own API) straight through.
 *
 * Why: moto's server is threaded, and its DynamoDB backend evaluates a condition and applies the
 * write without a lock, so two concurrent conditional writes to one item can both succeed (measured
 * with conditional UpdateItems: 1 to 2 rounds in 200 with 10 writers in flight; the store's
 * conditional PutItems did not race in 400 rounds of 20 writers, but nothing in moto promises
 * that). DynamoDB itself never lets it happen, and the store contract checks that exactly one of
 * many concurrent writers wins. Serialising DynamoDB
 * requests gives moto the atomicity it lacks without hiding anything the adapter does: DynamoDB
 * requests are short, and SQS long polls, which do wait, are not held up behind them.
 */
const motoRules: ProxyRules = {
  serialise: (target) => target.startsWith('DynamoDB_'),
};

/**
 * The rules of the proxy in front of local-kms: refuse, as KMS does, a Decrypt whose ciphertext
 * names another key than the request's `KeyId`.
 *
 * Why: a local-kms ciphertext blob is `[length][key ARN][4-byte key version][AES-GCM payload]`,
 * and when the request names a `KeyId`, local-kms decrypts with that key and never looks at the
 * ARN in the blob, so bytes changed inside it go unnoticed. KMS authenticates the whole blob
 * (it answers InvalidCiphertextException, or IncorrectKeyException for another key's ciphertext),
 * and the keys contract checks that a wrapped key tampered with anywhere is refused. Requests
 * naming the key by alias are relayed unchecked, since the proxy cannot resolve aliases.
 */
const localKmsRules: ProxyRules = {
  answer: (target, body) => {
    if (target !== 'TrentService.Decrypt') {
      return undefined;
    }
    let request: { KeyId?: unknown; CiphertextBlob?: unknown };
    try {
      request = JSON.parse(body.toString()) as typeof request;
    } catch {
      // Not JSON: local-kms answers that itself.
      return undefined;
    }
    const { KeyId, CiphertextBlob } = request;
    if (typeof KeyId !== 'string' || typeof CiphertextBlob !== 'string' || KeyId.includes('alias/')) {
      return undefined;
    }
    const blob = Buffer.from(CiphertextBlob, 'base64');
    const named = blob.subarray(1, 1 + (blob[0] ?? 0)).toString('latin1');
    if (named === KeyId || named.endsWith(`:key/${KeyId}`)) {
      return undefined;
    }
    return {
      status: 400,
      body: { __type: 'InvalidCiphertextException', message: 'the ciphertext does not name the requested key' },
    };
  },
};

/**
 * A throttle rule, switched on and off at run time, for a proxy in front of DynamoDB or KMS:
 * while on, it answers a fraction of the requests as the service does when it sheds load, with
 * the error each service gives (DynamoDB: ThrottlingException, ProvisionedThroughputExceeded,
 * RequestLimitExceeded, a 500 InternalServerError; KMS: ThrottlingException, LimitExceededException,
 * a 500 KMSInternalException), so the SDK's retries and what the control plane does past them
 * (503 with Retry-After, a message left to be redelivered) meet the real shapes.
 *
 * Used by the per-deployment proxies (test/cloud/harness.ts), not by the shared ones above: those
 * serve every test file of a run at once, and one file's throttling must not reach the others.
 */
export class ThrottleRule {
  /** The share of requests answered with an error while on: 0 (off) to 1. */
  fraction = 0;
  /** Requests answered with an error so far. */
  answered = 0;

  constructor(private readonly random: () => number = Math.random) {}

  /** The error to answer `target` (its `x-amz-target`) with, or undefined to let it through. */
  answer(target: string): { status: number; body: object } | undefined {
    if (this.fraction <= 0 || this.random() >= this.fraction) return undefined;
    const errors = target.startsWith('TrentService.')
      ? kmsThrottles
      : target.startsWith('DynamoDB_')
        ? dynamoDbThrottles
        : undefined;
    if (errors === undefined) return undefined;
    this.answered++;
    const [status, type, message] = errors[Math.floor(this.random() * errors.length)] as (typeof errors)[number];
    return { status, body: { __type: type, message } };
  }
}

const dynamoDbThrottles = [
  [400, 'com.amazonaws.dynamodb.v20120810#ThrottlingException', 'Rate of requests exceeds the allowed throughput.'],
  [
    400,
    'com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException',
    'The level of configured provisioned throughput for the table was exceeded.',
  ],
  [
    400,
    'com.amazonaws.dynamodb.v20120810#RequestLimitExceeded',
    'Throughput exceeds the current throughput limit for your account.',
  ],
  [500, 'com.amazonaws.dynamodb.v20120810#InternalServerError', 'Internal server error'],
] as const;

const kmsThrottles = [
  [400, 'ThrottlingException', 'Rate exceeded'],
  [400, 'LimitExceededException', 'You have exceeded the rate at which you may call KMS.'],
  [500, 'KMSInternalException', 'An internal error occurred.'],
] as const;

/**
 * Credentials that the emulators accept: they check that requests are signed, not by whom. Never
 * valid in AWS.
 */
export const emulatorCredentials = { accessKeyId: 'testing', secretAccessKey: 'testing' } as const;
