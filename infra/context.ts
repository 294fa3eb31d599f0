import type { Node } from 'constructs';
import { z } from 'zod';
import { settingMinimums, settingProblems } from '../functions/settings-rules.js';
import { dispatchModes } from './constructs/dispatch.js';
import type { GpuaiSettings } from './gpuai-stack.js';

/**
 * CDK context values arrive typed from cdk.json and as strings from `-c key=value`; both parse.
 */
const flag = z.union([z.boolean(), z.enum(['true', 'false']).transform((text) => text === 'true')]);
const count = z.coerce.number().int().positive();
/** A list from cdk.json (an array) or from `-c key=a,b` (comma-separated). */
const list = z.union([
  z.array(z.string().trim().min(1)).min(1),
  z
    .string()
    .transform((text) => text.split(',').map((item) => item.trim()))
    .pipe(z.array(z.string().min(1)).min(1)),
]);

/** The context keys of this app, with their defaults (also written out in cdk.json). */
const Context = z
  .object({
    'gpuai:stackName': z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9-]{0,127}$/)
      .default('Gpuai'),
    'gpuai:retainData': flag.default(true),
    // The same bounds as the functions' config (functions/handlers/config.ts), checked before deploying.
    'gpuai:leaseMs': count.min(settingMinimums.leaseMs).default(30_000),
    // docs/cost-model.md section 9: idle nodes beat every 30 s, nodes holding leases every 10 s.
    'gpuai:heartbeatIdleMs': count.min(settingMinimums.heartbeatIdleMs).default(30_000),
    'gpuai:heartbeatBusyMs': count.min(settingMinimums.heartbeatBusyMs).default(10_000),
    'gpuai:apiRateLimit': count.default(100),
    'gpuai:apiBurstLimit': count.default(200),
    'gpuai:alarmEmail': z.email().optional(),
    'gpuai:dispatch': z.enum(dispatchModes).default('sqs'),
    // Concurrency reserved for the API function; the account must keep 100 unreserved besides.
    'gpuai:apiConcurrency': count.max(10_000).default(100),
    // An OIDC issuer whose tokens API Gateway verifies on the application routes (docs/deploy.md).
    'gpuai:oidcIssuer': z.url({ protocol: /^https$/, hostname: z.regexes.domain }).optional(),
    'gpuai:oidcAudience': list.optional(),
    'gpuai:oidcTenantClaim': z
      .string()
      .regex(/^[A-Za-z0-9_:./-]{1,128}$/)
      .optional(),
  })
  .superRefine((c, ctx) => {
    const timings = {
      leaseMs: c['gpuai:leaseMs'],
      heartbeatIdleMs: c['gpuai:heartbeatIdleMs'],
      heartbeatBusyMs: c['gpuai:heartbeatBusyMs'],
    };
    const names = {
      leaseMs: 'gpuai:leaseMs',
      heartbeatIdleMs: 'gpuai:heartbeatIdleMs',
      heartbeatBusyMs: 'gpuai:heartbeatBusyMs',
    } as const;
    for (const { name, message } of settingProblems(timings, names)) {
      ctx.addIssue({ code: 'custom', path: [name], message });
    }
  })
  .refine((c) => (c['gpuai:oidcIssuer'] === undefined) === (c['gpuai:oidcAudience'] === undefined), {
    path: ['gpuai:oidcAudience'],
    message: 'gpuai:oidcIssuer and gpuai:oidcAudience go together: set both or neither',
  })
  .refine((c) => c['gpuai:oidcTenantClaim'] === undefined || c['gpuai:oidcIssuer'] !== undefined, {
    path: ['gpuai:oidcTenantClaim'],
    message: 'needs gpuai:oidcIssuer',
  });

/** The claim that names the tenant when `gpuai:oidcTenantClaim` is not given (as in functions/http/auth.ts). */
export const defaultOidcTenantClaim = 'sub';

/** What the app deploys: the stack's name and its settings. */
export interface AppContext {
  stackName: string;
  settings: GpuaiSettings;
}

/** Reads and validates the app's context; a bad value stops the synth naming its key. */
export function readContext(node: Node): AppContext {
  const keys = Object.keys(Context.shape);
  const raw = Object.fromEntries(keys.map((key) => [key, node.tryGetContext(key)]));
  const parsed = Context.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new Error(`invalid CDK context: ${problems.join('; ')}`);
  }
  const c = parsed.data;
  return {
    stackName: c['gpuai:stackName'],
    settings: {
      retainData: c['gpuai:retainData'],
      leaseMs: c['gpuai:leaseMs'],
      heartbeatIdleMs: c['gpuai:heartbeatIdleMs'],
      heartbeatBusyMs: c['gpuai:heartbeatBusyMs'],
      apiRateLimit: c['gpuai:apiRateLimit'],
      apiBurstLimit: c['gpuai:apiBurstLimit'],
      dispatch: c['gpuai:dispatch'],
      apiConcurrency: c['gpuai:apiConcurrency'],
      ...(c['gpuai:alarmEmail'] === undefined ? {} : { alarmEmail: c['gpuai:alarmEmail'] }),
      ...(c['gpuai:oidcIssuer'] === undefined || c['gpuai:oidcAudience'] === undefined
        ? {}
        : {
            oidc: {
              issuer: c['gpuai:oidcIssuer'],
              audience: c['gpuai:oidcAudience'],
              tenantClaim: c['gpuai:oidcTenantClaim'] ?? defaultOidcTenantClaim,
            },
          }),
    },
  };
}
