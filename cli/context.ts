/**
 * What every command action gets: the global flags resolved (`--api`, `--api-key`, `--json`), an API client,
 * colours decided once, and output helpers that keep stdout for results and stderr for the rest.
 */
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
import { resolveApiKey } from './credentials.js';
import { ExitCode, UsageError } from './errors.js';
import { createStyle, type Style } from './format.js';
import type { CliIo } from './io.js';

/** The default control plane address: where `gpuai start` listens by default. */
export const defaultApiUrl = 'http://127.0.0.1:8787';

/** The global flags, defined once on the program and accepted before or after the subcommand. */
export interface GlobalFlags {
  api?: string;
  apiKey?: string;
  json?: boolean;
}

/** The environment of one command action. */
export class CommandContext {
  /** `--json`: results as the API's JSON on stdout, errors as the API's error JSON on stderr. */
  readonly json: boolean;
  readonly style: Style;
  private readonly apiFlag: string | undefined;
  private readonly apiKeyFlag: string | undefined;
  private client: ApiClient | undefined;

  constructor(
    readonly io: CliIo,
    flags: GlobalFlags,
  ) {
    this.json = flags.json === true;
    this.apiFlag = flags.api;
    this.apiKeyFlag = flags.apiKey;
    this.style = createStyle(io.stdout.isTTY === true && !io.env.NO_COLOR);
  }

  /** The control plane URL: `--api`, else `$GPUAI_API`, else the local default. */
  get apiUrl(): string {
    // An empty variable counts as unset, as shells make it easy to export one by accident.
    const raw = this.apiFlag ?? (this.io.env.GPUAI_API || defaultApiUrl);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new UsageError(`--api expects an http(s) URL like ${defaultApiUrl}, got "${raw}"`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new UsageError(`--api expects an http(s) URL, got "${raw}"`);
    }
    return raw.replace(/\/+$/, '');
  }

  /**
   * The API client, created on first use so `start` never needs a valid `--api` or a key. The key
   * comes from `--api-key`, `$GPUAI_API_KEY`, the credentials file or the local admin key
   * (cli/credentials.ts); without one, requests go out unauthenticated and the server says why.
   */
  get api(): ApiClient {
    if (this.client === undefined) {
      const url = this.apiUrl;
      const resolved = resolveApiKey(this.apiKeyFlag, this.io.env, url);
      if (resolved.warning !== undefined) this.note(`${this.style.yellow('warning:')} ${resolved.warning}`);
      this.client = new ApiClient(url, {
        fetch: this.io.fetch,
        ...(resolved.key === undefined ? {} : { apiKey: resolved.key }),
        ...(resolved.tried === undefined ? {} : { missingKeyHint: resolved.tried }),
      });
    }
    return this.client;
  }

  /** Writes one line of human output to stdout. */
  out(text: string): void {
    this.io.stdout.write(`${text}\n`);
  }

  /** Writes an API body to stdout exactly as the server sent it. */
  outJson(text: string): void {
    this.io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** Writes a line to stderr: notes, hints and progress, which must never mix into results. */
  note(text: string): void {
    this.io.stderr.write(`${text}\n`);
  }
}

/** Per-run state shared by the command modules: the IO and the exit code the actions settle. */
export class App {
  exitCode: ExitCode = ExitCode.ok;

  constructor(readonly io: CliIo) {}

  /** The context for an action of `command`, with the global flags wherever they were typed. */
  context(command: Command): CommandContext {
    return new CommandContext(this.io, command.optsWithGlobals<GlobalFlags>());
  }
}
