/**
 * The cloud deployment's first API key, made by its operator: writes a key straight into the
 * stack's table with the operator's own AWS credentials (whoever may write the table already owns
 * the deployment), and prints it once. Later keys are made over the API (`gpuai keys create`).
 *
 *   TABLE_NAME=<TableName output> AWS_REGION=eu-west-1 \
 *     npx tsx functions/handlers/bootstrap-key.ts [--tenant ops] [--scopes admin] [--ttl 30d]
 *
 * Not a Lambda handler: an operator's entry point beside them, wired like them.
 *
 * @module
 */
import { parseArgs } from 'node:util';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { type CreatedApiKey, type Scope, Scope as ScopeSchema, TenantId, Ttl, ttlMs } from '../../protocol/index.js';
import { DynamoDbStore } from '../adapters/aws/dynamodb-store.js';
import { ApiKeys } from '../domain/security/api-keys.js';
import { systemClock } from '../ports/clock.js';
import { ConfigError } from './config.js';

export interface BootstrapOptions {
  table: string;
  region: string;
  /** An emulator's endpoint in tests; AWS's own otherwise. */
  endpoint?: string;
  tenant: string;
  scopes: Scope[];
  ttl?: string;
}

/** Parses the command line and environment; throws {@link ConfigError} naming what is wrong. */
export function readBootstrapOptions(argv: string[], env: NodeJS.ProcessEnv): BootstrapOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      tenant: { type: 'string', default: 'admin' },
      scopes: { type: 'string', default: 'admin' },
      ttl: { type: 'string' },
    },
  });
  if (!env.TABLE_NAME) throw new ConfigError('TABLE_NAME is not set: the stack output TableName');
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION;
  if (!region) throw new ConfigError('AWS_REGION is not set');
  if (!TenantId.safeParse(values.tenant).success)
    throw new ConfigError(`--tenant: "${values.tenant}" is not a tenant id`);
  const scopes = values.scopes.split(',').map((s) => {
    const parsed = ScopeSchema.safeParse(s.trim());
    if (!parsed.success) throw new ConfigError(`--scopes: "${s}" is not one of submit, read, admin`);
    return parsed.data;
  });
  if (values.ttl !== undefined && !Ttl.safeParse(values.ttl).success) {
    throw new ConfigError(`--ttl: "${values.ttl}" is not a lifetime like 30d, 12h or 90m`);
  }
  return {
    table: env.TABLE_NAME,
    region,
    ...(env.GPUAI_DYNAMODB_ENDPOINT ? { endpoint: env.GPUAI_DYNAMODB_ENDPOINT } : {}),
    tenant: values.tenant,
    scopes,
    ...(values.ttl === undefined ? {} : { ttl: values.ttl }),
  };
}

/** Creates the key in the table; the returned `key` is the only copy of the secret. */
export async function bootstrapKey(options: BootstrapOptions): Promise<CreatedApiKey> {
  const client = new DynamoDBClient({
    region: options.region,
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
  });
  try {
    const apiKeys = new ApiKeys(new DynamoDbStore(client, options.table, systemClock), systemClock);
    return await apiKeys.create({
      tenant: options.tenant,
      scopes: options.scopes,
      name: 'bootstrap',
      ...(options.ttl === undefined ? {} : { ttlMs: ttlMs(options.ttl) }),
    });
  } finally {
    client.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    const created = await bootstrapKey(readBootstrapOptions(process.argv.slice(2), process.env));
    process.stdout.write(`${created.key}\n`);
    process.stderr.write(
      `API key ${created.id} for tenant ${created.tenant}, scopes ${created.scopes.join(', ')}; shown only this once.\n`,
    );
  } catch (error) {
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
