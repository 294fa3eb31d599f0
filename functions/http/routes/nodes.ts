import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { z } from 'zod';
import {
  ClaimRequest,
  Dispatch,
  FailureReport,
  HeartbeatRequest,
  HeartbeatResponse,
  LeaseResponse,
  NodeCredentials,
  NodeId,
  NodeList,
  NodeListQuery,
  NodeView,
  ProgressReport,
  RegisterNodeRequest,
  RegisterNodeResponse,
  ResultReport,
  TaskId,
  TaskView,
  WorkQuery,
  WorkResponse,
} from '../../../protocol/index.js';
import { ConflictError } from '../../domain/errors.js';
import { isoTime } from '../../domain/records.js';
import { toNodeView } from '../../domain/resource/node-record.js';
import { ownPoolQueue } from '../../domain/resource/pool-queues.js';
import { type ReplayCheck, RequestAuthenticator } from '../../domain/security/request-auth.js';
import { authorized } from '../auth.js';
import type { AppDeps, AppEnv } from '../context.js';
import { errorResponses, json } from './responses.js';

const NodeParams = z.object({ nodeId: NodeId });
const TaskParams = z.object({ nodeId: NodeId, taskId: TaskId });
const signed = [{ nodeSignature: [] }];

const listNodes = createRoute({
  method: 'get',
  path: '/v1/nodes',
  tags: ['nodes'],
  ...authorized('read'),
  summary: 'List registered nodes',
  request: { query: NodeListQuery },
  responses: {
    200: json(NodeList, 'A page of nodes: shard by shard, oldest registration first within a shard'),
    ...errorResponses(400, 401, 403),
  },
});

const getNode = createRoute({
  method: 'get',
  path: '/v1/nodes/{nodeId}',
  tags: ['nodes'],
  ...authorized('read'),
  summary: 'Get a node',
  request: { params: NodeParams },
  responses: { 200: json(NodeView, 'The node'), ...errorResponses(400, 401, 403, 404) },
});

const registerNode = createRoute({
  method: 'post',
  path: '/v1/nodes',
  tags: ['agent'],
  summary: 'Register a node (signed with the key being registered)',
  security: signed,
  request: { body: { required: true, content: { 'application/json': { schema: RegisterNodeRequest } } } },
  responses: {
    201: json(RegisterNodeResponse, 'Registered'),
    200: json(RegisterNodeResponse, 'Already registered: inventory updated'),
    ...errorResponses(400, 401, 403, 413),
  },
});

const heartbeat = createRoute({
  method: 'post',
  path: '/v1/nodes/{nodeId}/heartbeat',
  tags: ['agent'],
  summary: 'Heartbeat: extends the leases of running tasks, returns the tasks to abort',
  security: signed,
  request: {
    params: NodeParams,
    body: { required: true, content: { 'application/json': { schema: HeartbeatRequest } } },
  },
  responses: { 200: json(HeartbeatResponse, 'Alive'), ...errorResponses(400, 401, 403, 404) },
});

const pollWork = createRoute({
  method: 'get',
  path: '/v1/nodes/{nodeId}/work',
  tags: ['agent'],
  summary: 'Long-poll for a task this node fits',
  security: signed,
  request: { params: NodeParams, query: WorkQuery },
  responses: {
    200: json(WorkResponse, 'A task is bound to this node (late binding)'),
    204: { description: 'No task fitted this node before `wait` ran out' },
    ...errorResponses(400, 401, 403, 404),
  },
});

const claimTask = createRoute({
  method: 'post',
  path: '/v1/nodes/{nodeId}/claims',
  tags: ['agent'],
  summary: 'Claim a task named by a work hint (sqs dispatch); binds it as the long poll would',
  security: signed,
  request: {
    params: NodeParams,
    body: { required: true, content: { 'application/json': { schema: ClaimRequest } } },
  },
  responses: {
    200: json(WorkResponse, 'The task is bound to this node; the hint, if named, is deleted'),
    ...errorResponses(400, 401, 403, 404, 409, 413),
  },
});

const issueCredentials = createRoute({
  method: 'post',
  path: '/v1/nodes/{nodeId}/credentials',
  tags: ['agent'],
  summary: "Temporary credentials that allow only receiving from this node's pool queues (sqs dispatch)",
  security: signed,
  request: { params: NodeParams },
  responses: {
    200: json(NodeCredentials, 'Credentials, valid until `expiresAt`'),
    ...errorResponses(401, 403, 404, 409),
  },
});

const reportBody = <T>(schema: T) => ({ required: true, content: { 'application/json': { schema } } });
const taskErrors = errorResponses(400, 401, 403, 404, 409, 413);

const reportProgress = createRoute({
  method: 'post',
  path: '/v1/nodes/{nodeId}/tasks/{taskId}/progress',
  tags: ['agent'],
  summary: 'Report progress; the first report marks the task running; extends the lease',
  security: signed,
  request: { params: TaskParams, body: reportBody(ProgressReport) },
  responses: { 200: json(LeaseResponse, 'Lease extended'), ...taskErrors },
});

const reportResult = createRoute({
  method: 'post',
  path: '/v1/nodes/{nodeId}/tasks/{taskId}/result',
  tags: ['agent'],
  summary: 'Report the result of an attempt',
  security: signed,
  request: { params: TaskParams, body: reportBody(ResultReport) },
  responses: { 200: json(TaskView, 'The task after the report'), ...taskErrors },
});

const reportFailure = createRoute({
  method: 'post',
  path: '/v1/nodes/{nodeId}/tasks/{taskId}/fail',
  tags: ['agent'],
  summary: 'Report a failed attempt, or hand the task back (released)',
  security: signed,
  request: { params: TaskParams, body: reportBody(FailureReport) },
  responses: { 200: json(TaskView, 'The task after the report'), ...taskErrors },
});

/**
 * Verifies the node signature over the exact request; returns the node id it proves. Under the
 * `date` replay check the signed date is left for the route (`signedDate`) instead of a nonce write.
 */
async function authenticate(
  c: Context<AppEnv>,
  { cp }: AppDeps,
  options: { registeringKey?: string; replay?: ReplayCheck } = {},
): Promise<string> {
  const url = new URL(c.req.url);
  const { nodeId, dateMs } = await cp.auth.verify(
    {
      method: c.req.method,
      pathWithQuery: url.pathname + url.search,
      // A GET has no body; reading one anyway made @hono/node-server build a full web Request per poll.
      body: c.req.method === 'GET' ? '' : await c.req.text(),
      header: (name) => c.req.header(name),
    },
    options,
  );
  if (options.replay === 'date') c.set('signedDate', dateMs);
  return nodeId;
}

/**
 * The node routes whose requests are streams with increasing signed dates, checked inside the
 * write each makes anyway: a node's heartbeats (its presence) and an attempt's progress (its task).
 * Every other node route writes a nonce item (docs/cost-model.md section 9).
 */
const dateCheckedRoute = /^\/v1\/nodes\/[^/]+\/(heartbeat|tasks\/[^/]+\/progress)$/;
const replayCheckOf = (method: string, path: string): ReplayCheck =>
  method === 'POST' && dateCheckedRoute.test(path) ? 'date' : 'nonce';

export function nodeRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const { cp } = deps;
  const view = (node: Parameters<typeof toNodeView>[0]) => toNodeView(node, cp.clock.now(), cp.settings.livenessMs);

  // Node-scoped agent routes authenticate before their input is validated: an unsigned caller
  // learns nothing about the shape the endpoint expects.
  app.use('/v1/nodes/:nodeId/*', async (c, next) => {
    // The wildcard also matches `/v1/nodes/{nodeId}` itself, which is an application route.
    if (c.req.path.split('/').length <= 4) return next();
    const nodeId = await authenticate(c, deps, { replay: replayCheckOf(c.req.method, c.req.path) });
    RequestAuthenticator.assertSameNode(nodeId, c.req.param('nodeId') ?? '');
    // Counted once the signature verified: an unsigned caller cannot spend another node's budget.
    await cp.limits.consume('node', nodeId);
    await next();
  });

  app.openapi(listNodes, async (c) => {
    const q = c.req.valid('query');
    const page = await cp.nodes.list(q.limit, q.cursor, q.status);
    const nodes = page.nodes.map(view).filter((node) => q.status === undefined || node.status === q.status);
    return c.json({ nodes, ...(page.cursor === undefined ? {} : { cursor: page.cursor }) }, 200);
  });

  app.openapi(getNode, async (c) => c.json(view(await cp.nodes.describe(c.req.valid('param').nodeId)), 200));

  app.openapi(registerNode, async (c) => {
    const body = c.req.valid('json');
    await authenticate(c, deps, { registeringKey: body.publicKey });
    const { node, created } = await cp.nodes.register(body);
    cp.router.invalidate();
    const response = {
      node: view(node),
      heartbeatIntervalMs: cp.settings.heartbeatIdleMs,
      progressIntervalMs: cp.settings.progressIntervalMs,
      leaseMs: cp.settings.leaseMs,
      dispatch: Dispatch.parse(await cp.hints.dispatchFor(node.pools)),
    };
    return c.json(response, created ? 201 : 200);
  });

  app.openapi(heartbeat, async (c) =>
    c.json(await cp.reports.heartbeat(c.req.valid('param').nodeId, c.req.valid('json'), c.get('signedDate')), 200),
  );

  app.openapi(pollWork, async (c) => {
    const assignment = await cp.dispatcher.poll(
      c.req.valid('param').nodeId,
      c.req.valid('query').wait,
      c.req.raw.signal,
    );
    return assignment === undefined ? c.body(null, 204) : c.json({ assignment }, 200);
  });

  app.openapi(claimTask, async (c) => {
    const { nodeId } = c.req.valid('param');
    const { taskId, queueUrl, receiptHandle } = c.req.valid('json');
    // Checked before the claim: a claim naming a foreign queue changes nothing.
    const ownQueue =
      queueUrl === undefined ? undefined : await ownPoolQueue(cp.hints, (await cp.nodes.get(nodeId)).pools, queueUrl);
    const assignment = await cp.dispatcher.claim(nodeId, taskId);
    if (ownQueue !== undefined && receiptHandle !== undefined) {
      // The claim holds already; a hint left behind is only a duplicate, refused at its claim.
      await cp.hints.acknowledge(ownQueue, receiptHandle).catch(() => undefined);
    }
    return c.json({ assignment }, 200);
  });

  app.openapi(issueCredentials, async (c) => {
    const node = await cp.nodes.get(c.req.valid('param').nodeId);
    const dispatch = await cp.hints.dispatchFor(node.pools);
    const issued =
      dispatch.mode === 'sqs'
        ? await cp.credentials.issue(
            node.id,
            dispatch.queues.map((q) => q.url),
          )
        : undefined;
    if (issued === undefined) {
      throw new ConflictError('not_supported', 'this deployment dispatches over long polls and issues no credentials');
    }
    return c.json(issued, 200);
  });

  app.openapi(reportProgress, async (c) => {
    const { nodeId, taskId } = c.req.valid('param');
    const lease = await cp.reports.progress(nodeId, taskId, c.req.valid('json'), c.get('signedDate'));
    return c.json({ leaseExpiresAt: isoTime(lease.leaseExpiresAt) }, 200);
  });

  app.openapi(reportResult, async (c) => {
    const { nodeId, taskId } = c.req.valid('param');
    return c.json(await cp.reports.result(nodeId, taskId, c.req.valid('json')), 200);
  });

  app.openapi(reportFailure, async (c) => {
    const { nodeId, taskId } = c.req.valid('param');
    return c.json(await cp.reports.fail(nodeId, taskId, c.req.valid('json')), 200);
  });
}
