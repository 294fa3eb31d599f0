/** `gpuai keys ...`: create, list and revoke API keys (needs an admin key). */
import { Command } from 'commander';
import { type ApiKeyView, type CreateApiKeyInput, Scope, TenantId, Ttl } from '../../protocol/api-keys.js';
import type { App, CommandContext } from '../context.js';
import { credentialsFilePath } from '../credentials.js';
import { ExitCode, UsageError } from '../errors.js';
import { formatRelativeTime, formatTable, type Style } from '../format.js';
import { followCursors, parseLimit } from '../paging.js';
import { examples } from './help.js';

interface CreateOptions {
  tenant?: string;
  scopes: string;
  expires?: string;
  name?: string;
}

interface ListOptions {
  tenant?: string;
  limit?: string;
  cursor?: string;
  all?: boolean;
}

/** `--scopes submit,read`: each one of submit, read, admin. */
export function parseScopes(text: string): Scope[] {
  const scopes = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (scopes.length === 0) throw new UsageError('--scopes needs at least one of submit, read, admin');
  return scopes.map((s) => {
    const parsed = Scope.safeParse(s);
    if (!parsed.success) throw new UsageError(`--scopes: "${s}" is not a scope; use submit, read and/or admin`);
    return parsed.data;
  });
}

/** `--expires 30d` (a lifetime in m, h or d) or `--expires 2027-01-01T00:00:00Z` (a date). */
export function parseExpires(text: string): Pick<CreateApiKeyInput, 'ttl' | 'expiresAt'> {
  if (Ttl.safeParse(text).success) return { ttl: text };
  const ms = Date.parse(text);
  if (/^\d{4}-\d{2}-\d{2}/.test(text) && !Number.isNaN(ms)) return { expiresAt: new Date(ms).toISOString() };
  throw new UsageError(`--expires expects a lifetime like 30d, 12h or 90m, or a date like 2027-01-01, got "${text}"`);
}

function tenantFlag(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  if (!TenantId.safeParse(text).success) {
    throw new UsageError(`--tenant: "${text}" is not a tenant id (letters, digits and . _ @ | : + -, at most 128)`);
  }
  return text;
}

async function create(ctx: CommandContext, options: CreateOptions): Promise<ExitCode> {
  const tenant = tenantFlag(options.tenant);
  const request: CreateApiKeyInput = {
    scopes: parseScopes(options.scopes),
    ...(tenant === undefined ? {} : { tenant }),
    ...(options.name === undefined ? {} : { name: options.name }),
    ...(options.expires === undefined ? {} : parseExpires(options.expires)),
  };
  const response = await ctx.api.createKey(request);
  if (ctx.json) {
    ctx.outJson(response.text);
    return ExitCode.ok;
  }
  const key = response.body;
  // The key alone on stdout, so `KEY=$(gpuai keys create ...)` works; the rest is for people.
  ctx.out(key.key);
  const expires = key.expiresAt === undefined ? 'never expires' : `expires ${key.expiresAt}`;
  ctx.note(ctx.style.dim(`API key ${key.id} for tenant ${key.tenant}, scopes ${key.scopes.join(', ')}, ${expires}.`));
  ctx.note(ctx.style.dim('It is shown only this once. Use it with GPUAI_API_KEY=... or, in a file only you can read,'));
  ctx.note(ctx.style.dim(`"api_key = ..." in ${credentialsFilePath(ctx.io.env) ?? '~/.config/gpuai/credentials'}`));
  return ExitCode.ok;
}

function renderKeys(keys: readonly ApiKeyView[], style: Style, now: number): string {
  const status = (k: ApiKeyView) =>
    k.status === 'active'
      ? style.green(k.status)
      : k.status === 'revoked'
        ? style.red(k.status)
        : style.yellow(k.status);
  return formatTable(
    [
      { header: 'ID' },
      { header: 'TENANT', maxWidth: 24 },
      { header: 'SCOPES' },
      { header: 'NAME', maxWidth: 24 },
      { header: 'STATUS' },
      { header: 'CREATED' },
      { header: 'EXPIRES' },
    ],
    keys.map((k) => [
      k.id,
      k.tenant,
      k.scopes.join(','),
      k.name ?? '',
      status(k),
      formatRelativeTime(k.createdAt, now),
      k.expiresAt === undefined ? 'never' : k.expiresAt,
    ]),
    style,
  );
}

async function list(ctx: CommandContext, options: ListOptions): Promise<ExitCode> {
  const tenant = tenantFlag(options.tenant);
  const query = {
    ...(options.limit === undefined ? {} : { limit: parseLimit(options.limit) }),
    ...(tenant === undefined ? {} : { tenant }),
  };
  if (options.all === true) {
    const keys = await followCursors(options.cursor, async (cursor) => {
      const page = await ctx.api.listKeys(cursor === undefined ? query : { ...query, cursor });
      return { items: page.body.keys, cursor: page.body.cursor };
    });
    if (ctx.json) ctx.outJson(JSON.stringify({ keys }));
    else ctx.out(keys.length === 0 ? 'no keys' : renderKeys(keys, ctx.style, ctx.io.now()));
    return ExitCode.ok;
  }
  const response = await ctx.api.listKeys(options.cursor === undefined ? query : { ...query, cursor: options.cursor });
  if (ctx.json) {
    ctx.outJson(response.text);
    return ExitCode.ok;
  }
  const page = response.body;
  ctx.out(page.keys.length === 0 ? 'no keys' : renderKeys(page.keys, ctx.style, ctx.io.now()));
  if (page.cursor !== undefined) ctx.note(ctx.style.dim(`more: gpuai keys list --cursor ${page.cursor} (or --all)`));
  return ExitCode.ok;
}

async function revoke(ctx: CommandContext, keyId: string): Promise<ExitCode> {
  const response = await ctx.api.revokeKey(keyId);
  if (ctx.json) ctx.outJson(response.text);
  else ctx.out(`revoked ${response.body.id} (tenant ${response.body.tenant}); its next request is refused`);
  return ExitCode.ok;
}

/** Builds `gpuai keys` and its subcommands. */
export function keysCommand(app: App): Command {
  const keys = new Command('keys')
    .description(
      'manage API keys (needs an admin key). Every command but `start` sends an API key: --api-key, ' +
        '$GPUAI_API_KEY, the credentials file, or the local admin key that `gpuai start` writes',
    )
    .addHelpText(
      'after',
      `${examples([
        'gpuai keys create --tenant acme --scopes submit,read --expires 30d',
        'gpuai keys list',
        'gpuai keys revoke k7qd3hx2mfa5ztw4n6ry',
      ])}
Where the key comes from (first match wins):
  --api-key <key>                     (visible to other users in the process list)
  $GPUAI_API_KEY
  $XDG_CONFIG_HOME/gpuai/credentials  (default ~/.config/gpuai/credentials; must be mode 0600)
      api_key = gpk_...               the key for every control plane
      [https://gpuai.example.com]     a key for one control plane (matched against --api)
      api_key = gpk_...
  $GPUAI_DATA_DIR/admin-key           (default ./.gpuai/admin-key, made by \`gpuai start\`;
                                       sent only to a control plane on this machine)
`,
    );

  keys
    .command('create')
    .description('create an API key and print it (shown only this once)')
    .option('--tenant <tenant>', "the key's tenant: whose jobs it submits and sees (default: your key's tenant)")
    .option(
      '--scopes <list>',
      'comma-separated: submit (submit, cancel), read (jobs, logs, nodes), admin (the operator of the whole ' +
        "deployment, whatever its tenant: manages every tenant's keys and join tokens; implies submit and read)",
      'submit,read',
    )
    .option('--expires <when>', 'a lifetime (30d, 12h, 90m) or a date (2027-01-01); default: never')
    .option('--name <name>', 'a label to recognise the key by')
    .addHelpText(
      'after',
      `${examples([
        'gpuai keys create --tenant acme --scopes submit,read --expires 30d --name ci',
        'export GPUAI_API_KEY=$(gpuai keys create --tenant acme --scopes read --expires 12h)',
        'gpuai keys create --tenant ops --scopes admin --json | jq -r .key',
      ])}
An admin key is the operator of the whole deployment, whatever its tenant: it creates, lists and
revokes every tenant's keys and join tokens, and implies submit and read. Give it only to operators.
`,
    )
    .action(async (options: CreateOptions, command: Command) => {
      app.exitCode = await create(app.context(command), options);
    });

  keys
    .command('list')
    .description('list API keys of every tenant (or one): id, tenant, scopes, status; never a secret')
    .option('--tenant <tenant>', "only this tenant's keys")
    .option('--limit <n>', 'page size, 1 to 200 (default 50)')
    .option('--cursor <cursor>', 'continue from a previous page')
    .option('--all', 'follow the cursors and list every key (--json prints one {"keys": [...]})')
    .addHelpText('after', examples(['gpuai keys list', 'gpuai keys list --tenant acme --json']))
    .action(async (options: ListOptions, command: Command) => {
      app.exitCode = await list(app.context(command), options);
    });

  keys
    .command('revoke')
    .description('revoke an API key at once: its next request is refused (401 api_key_revoked)')
    .argument('<keyId>', 'the key id, as `gpuai keys list` shows it (the 20 characters after gpk_)')
    .addHelpText('after', examples(['gpuai keys revoke k7qd3hx2mfa5ztw4n6ry']))
    .action(async (keyId: string, _options: object, command: Command) => {
      app.exitCode = await revoke(app.context(command), keyId);
    });

  return keys;
}
