/** `gpuai nodes ...`: the edge nodes that run tasks. */
import { Command } from 'commander';
import { NodeStatus } from '../../protocol/node.js';
import type { App, CommandContext } from '../context.js';
import { ExitCode, UsageError } from '../errors.js';
import { followCursors, parseLimit } from '../paging.js';
import { renderNode, renderNodeList } from '../views.js';
import { examples } from './help.js';

interface ListOptions {
  status?: string;
  limit?: string;
  cursor?: string;
  all?: boolean;
}

async function list(ctx: CommandContext, options: ListOptions): Promise<ExitCode> {
  const status = NodeStatus.safeParse(options.status);
  if (options.status !== undefined && !status.success) {
    throw new UsageError(`--status expects one of ${NodeStatus.options.join(', ')}, got "${options.status}"`);
  }
  const query = {
    ...(status.success ? { status: status.data } : {}),
    ...(options.limit === undefined ? {} : { limit: parseLimit(options.limit) }),
  };
  if (options.all === true) {
    const nodes = await followCursors(options.cursor, async (cursor) => {
      const page = await ctx.api.listNodes(cursor === undefined ? query : { ...query, cursor });
      return { items: page.body.nodes, cursor: page.body.cursor };
    });
    if (ctx.json) ctx.outJson(JSON.stringify({ nodes }));
    else ctx.out(nodes.length === 0 ? 'no nodes' : renderNodeList(nodes, ctx.style, ctx.io.now()));
    return ExitCode.ok;
  }
  const response = await ctx.api.listNodes(options.cursor === undefined ? query : { ...query, cursor: options.cursor });
  if (ctx.json) {
    ctx.outJson(response.text);
    return ExitCode.ok;
  }
  const page = response.body;
  // The status filter applies within each page, so a page may be short, even empty, yet have a cursor.
  const none = page.cursor === undefined ? 'no nodes' : 'no nodes on this page';
  ctx.out(page.nodes.length === 0 ? none : renderNodeList(page.nodes, ctx.style, ctx.io.now()));
  if (page.cursor !== undefined) {
    const filter = query.status === undefined ? '' : ` --status ${query.status}`;
    ctx.note(ctx.style.dim(`more: gpuai nodes list${filter} --cursor ${page.cursor} (or --all)`));
  }
  return ExitCode.ok;
}

async function get(ctx: CommandContext, nodeId: string): Promise<ExitCode> {
  const response = await ctx.api.getNode(nodeId);
  if (ctx.json) ctx.outJson(response.text);
  else ctx.out(renderNode(response.body, ctx.style, ctx.io.now()));
  return ExitCode.ok;
}

/** Builds `gpuai nodes` and its subcommands. */
export function nodesCommand(app: App): Command {
  const nodes = new Command('nodes')
    .description('list the edge nodes that run tasks, with their GPUs')
    .addHelpText('after', examples(['gpuai nodes list', 'gpuai nodes get node_abcdefghijklmnopqrstuvwxyz']));

  nodes
    .command('list')
    .description('list nodes: id, name, status, region, GPUs, tasks done, last seen')
    .option('--status <status>', `only nodes with this status: ${NodeStatus.options.join(', ')}`)
    .option('--limit <n>', 'page size, 1 to 200 (default 50)')
    .option('--cursor <cursor>', 'continue from a previous page')
    .option('--all', 'follow the cursors and list every node (--json prints one {"nodes": [...]})')
    .addHelpText(
      'after',
      examples([
        'gpuai nodes list',
        'gpuai nodes list --status live --all',
        "gpuai nodes list --status live --all --json | jq -r '.nodes[].id'",
      ]),
    )
    .action(async (options: ListOptions, command: Command) => {
      app.exitCode = await list(app.context(command), options);
    });

  nodes
    .command('get')
    .description('show a node: machine, GPUs, record')
    .argument('<nodeId>', 'the node id (node_...)')
    .addHelpText('after', examples(['gpuai nodes get node_abcdefghijklmnopqrstuvwxyz']))
    .action(async (nodeId: string, _options: object, command: Command) => {
      app.exitCode = await get(app.context(command), nodeId);
    });

  return nodes;
}
