/** `gpuai tokens ...`: create, list and revoke join tokens, under which nodes enroll (needs an admin key). */
import { Command } from 'commander';
import {
  anonymousOperator,
  type CreateJoinTokenRequest,
  type JoinTokenView,
  OperatorName,
  PoolScope,
} from '../../protocol/enrollment.js';
import type { App, CommandContext } from '../context.js';
import { ExitCode, UsageError } from '../errors.js';
import { formatRelativeTime, formatTable, type Style } from '../format.js';
import { followCursors, parseLimit } from '../paging.js';
import { examples } from './help.js';

interface CreateOptions {
  operator?: string;
  pools?: string;
  expires: string;
  maxUses?: string;
  description?: string;
}

interface ListOptions {
  limit?: string;
  cursor?: string;
  all?: boolean;
}

/** `--operator acme`: a lowercase slug, not the reserved `anonymous`. */
export function parseOperator(text: string | undefined): string {
  if (text === undefined) throw new UsageError('--operator is required: the operator the nodes will belong to');
  if (text === anonymousOperator) throw new UsageError(`--operator: "${anonymousOperator}" is reserved`);
  if (!OperatorName.safeParse(text).success) {
    throw new UsageError(`--operator: "${text}" is not an operator name (lowercase letters, digits, . _ -)`);
  }
  return text;
}

/** `--pools eu-west/h100,*\/l4`: pool scopes, `<region>/<class>` with `*` for either side. */
export function parsePools(text: string): string[] {
  const pools = text
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  if (pools.length === 0) throw new UsageError('--pools needs at least one pool, e.g. eu-west/h100 or local/*');
  for (const pool of pools) {
    if (!PoolScope.safeParse(pool).success) {
      throw new UsageError(
        `--pools: "${pool}" is not a pool: <region>/<class>, either side may be *, e.g. eu-west/h100`,
      );
    }
  }
  return pools;
}

/** `--expires 24h`: a lifetime in m, h or d, from one minute to a year. */
export function parseTokenTtl(text: string): number {
  const match = /^(\d{1,6})([mhd])$/.exec(text.trim());
  const seconds = match === null ? Number.NaN : Number(match[1]) * { m: 60, h: 3600, d: 86_400 }[match[2] as 'm'];
  if (!Number.isSafeInteger(seconds) || seconds < 60 || seconds > 365 * 86_400) {
    throw new UsageError(`--expires expects a lifetime from 1m to 365d, like 90m, 24h or 7d, got "${text}"`);
  }
  return seconds;
}

function parseMaxUses(text: string): number {
  const uses = /^\d{1,7}$/.test(text.trim()) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(uses) || uses < 1 || uses > 1_000_000) {
    throw new UsageError(`--max-uses expects a whole number from 1 to 1000000, got "${text}"`);
  }
  return uses;
}

async function create(ctx: CommandContext, options: CreateOptions): Promise<ExitCode> {
  const request: CreateJoinTokenRequest = {
    operator: parseOperator(options.operator),
    ttlSeconds: parseTokenTtl(options.expires),
    ...(options.pools === undefined ? {} : { pools: parsePools(options.pools) }),
    ...(options.maxUses === undefined ? {} : { maxUses: parseMaxUses(options.maxUses) }),
    ...(options.description === undefined ? {} : { description: options.description }),
  };
  const response = await ctx.api.createJoinToken(request);
  if (ctx.json) {
    ctx.outJson(response.text);
    return ExitCode.ok;
  }
  const { token, secret } = response.body;
  // The token alone on stdout, so `TOKEN=$(gpuai tokens create ...)` works; the rest is for people.
  ctx.out(secret);
  const uses = token.maxUses === undefined ? 'any number of nodes' : `${token.maxUses} node(s)`;
  const pools = token.pools === undefined ? 'any pool' : token.pools.join(', ');
  ctx.note(
    ctx.style.dim(
      `Join token ${token.id} for operator ${token.operator}: ${uses}, ${pools}, until ${token.expiresAt}.`,
    ),
  );
  ctx.note(ctx.style.dim('It is shown only this once. On the node:'));
  ctx.note(
    ctx.style.dim(
      `  GPUAI_JOIN_TOKEN=${token.id}.… npx gpuai-agent run --api ${ctx.apiUrl} --runtime process --data-dir ~/.gpuai-agent`,
    ),
  );
  return ExitCode.ok;
}

function renderTokens(tokens: readonly JoinTokenView[], style: Style, now: number): string {
  const status = (t: JoinTokenView) => (t.status === 'active' ? style.green(t.status) : style.yellow(t.status));
  return formatTable(
    [
      { header: 'ID' },
      { header: 'OPERATOR', maxWidth: 24 },
      { header: 'POOLS', maxWidth: 32 },
      { header: 'USES' },
      { header: 'STATUS' },
      { header: 'CREATED' },
      { header: 'EXPIRES' },
    ],
    tokens.map((t) => [
      t.id,
      t.operator,
      t.pools === undefined ? 'any' : t.pools.join(','),
      t.maxUses === undefined ? String(t.uses) : `${t.uses}/${t.maxUses}`,
      status(t),
      formatRelativeTime(t.createdAt, now),
      t.expiresAt,
    ]),
    style,
  );
}

async function list(ctx: CommandContext, options: ListOptions): Promise<ExitCode> {
  const query = options.limit === undefined ? {} : { limit: parseLimit(options.limit) };
  if (options.all === true) {
    const tokens = await followCursors(options.cursor, async (cursor) => {
      const page = await ctx.api.listJoinTokens(cursor === undefined ? query : { ...query, cursor });
      return { items: page.body.tokens, cursor: page.body.cursor };
    });
    if (ctx.json) ctx.outJson(JSON.stringify({ tokens }));
    else ctx.out(tokens.length === 0 ? 'no join tokens' : renderTokens(tokens, ctx.style, ctx.io.now()));
    return ExitCode.ok;
  }
  const response = await ctx.api.listJoinTokens(
    options.cursor === undefined ? query : { ...query, cursor: options.cursor },
  );
  if (ctx.json) {
    ctx.outJson(response.text);
    return ExitCode.ok;
  }
  const page = response.body;
  ctx.out(page.tokens.length === 0 ? 'no join tokens' : renderTokens(page.tokens, ctx.style, ctx.io.now()));
  if (page.cursor !== undefined) ctx.note(ctx.style.dim(`more: gpuai tokens list --cursor ${page.cursor} (or --all)`));
  return ExitCode.ok;
}

async function revoke(ctx: CommandContext, tokenId: string): Promise<ExitCode> {
  const response = await ctx.api.revokeJoinToken(tokenId);
  if (ctx.json) ctx.outJson(response.text);
  else ctx.out(`revoked ${response.body.id} (operator ${response.body.operator}); no node joins with it any more`);
  return ExitCode.ok;
}

/** Builds `gpuai tokens` and its subcommands. */
export function tokensCommand(app: App): Command {
  const tokens = new Command('tokens')
    .description(
      'manage join tokens (needs an admin key): a node presents one at its first registration and joins ' +
        "under the token's operator",
    )
    .addHelpText(
      'after',
      examples([
        'gpuai tokens create --operator acme --pools "eu-west/h100,eu-west/a100" --expires 24h --max-uses 4',
        'gpuai tokens list',
        'gpuai tokens revoke jt_01JD7Z5C2Q9W8V6T4R2P0N8M6K',
      ]),
    );

  tokens
    .command('create')
    .description('create a join token and print it (shown only this once)')
    .option('--operator <name>', 'the operator nodes joining with this token belong to (required)')
    .option(
      '--pools <list>',
      'comma-separated pools the nodes may serve: <region>/<class>, * for either side (default: any)',
    )
    .option('--expires <lifetime>', 'how long the token admits nodes: 90m, 24h, 7d', '24h')
    .option('--max-uses <n>', 'how many nodes may join with it (default: any number)')
    .option('--description <text>', 'a label to recognise the token by')
    .addHelpText(
      'after',
      examples([
        'gpuai tokens create --operator me --pools "local/*"',
        'export GPUAI_JOIN_TOKEN=$(gpuai tokens create --operator acme --pools "*/h100" --max-uses 1)',
      ]),
    )
    .action(async (options: CreateOptions, command: Command) => {
      app.exitCode = await create(app.context(command), options);
    });

  tokens
    .command('list')
    .description('list join tokens: id, operator, pools, uses, status; never a secret')
    .option('--limit <n>', 'page size, 1 to 200 (default 50)')
    .option('--cursor <cursor>', 'continue from a previous page')
    .option('--all', 'follow the cursors and list every token (--json prints one {"tokens": [...]})')
    .action(async (options: ListOptions, command: Command) => {
      app.exitCode = await list(app.context(command), options);
    });

  tokens
    .command('revoke')
    .description('revoke a join token: no node joins with it any more (nodes that joined stay)')
    .argument('<tokenId>', 'the token id, as `gpuai tokens list` shows it (the part before the dot)')
    .action(async (tokenId: string, _options: object, command: Command) => {
      app.exitCode = await revoke(app.context(command), tokenId);
    });

  return tokens;
}
