import { type AttributeValue, type DynamoDBClient, ScanCommand } from '@aws-sdk/client-dynamodb';
import { indexKeyAttributes, itemAttributes } from '../../functions/adapters/aws/dynamodb-store.js';
import { isTerminal } from '../../functions/domain/scheduling/task-record.js';
import type { StoredState } from './invariants.js';
import { fromItems, type StoredItem } from './state.js';

/**
 * The whole state of a cloud control plane, read from its DynamoDB table with a consistent scan:
 * every job, task and node item with the index keys each task carries, in the shape the SQLite
 * reader (state.ts) gives, so the invariant checker does not know where the state came from.
 *
 * A scan is not a snapshot: items written while it pages can be seen before or after their write.
 * The checks that run mid-run (soak intervals) hold for each item on its own, so that is enough;
 * after a run nothing writes. Read through a client that reaches the table directly, not through
 * the throttled proxies: the checker observes the system, it is not part of it.
 */
export async function readDynamoDbState(
  client: DynamoDBClient,
  tableName: string,
  readAt = Date.now(),
): Promise<StoredState> {
  const items: StoredItem[] = [];
  let startKey: Record<string, AttributeValue> | undefined;
  do {
    const page = await client.send(
      new ScanCommand({
        TableName: tableName,
        ConsistentRead: true,
        ...(startKey ? { ExclusiveStartKey: startKey } : {}),
      }),
    );
    for (const raw of page.Items ?? []) {
      const pk = raw[itemAttributes.pk]?.S;
      const sk = raw[itemAttributes.sk]?.S;
      const data = raw[itemAttributes.data]?.S;
      if (pk === undefined || sk === undefined || data === undefined) continue;
      if (!pk.startsWith('JOB#') && !(pk.startsWith('NODE#') && sk === 'NODE')) continue;
      items.push({
        pk,
        sk,
        data: JSON.parse(data) as unknown,
        byPool: raw[indexKeyAttributes.byPool.pk]?.S ?? null,
        byDue: raw[indexKeyAttributes.byDue.pk]?.S ?? null,
      });
    }
    startKey = page.LastEvaluatedKey;
  } while (startKey !== undefined);
  return fromItems(items, readAt);
}

/** Tasks not yet ended, for progress and for waiting until the backlog drained. */
export async function openTaskCountOf(client: DynamoDBClient, tableName: string): Promise<number> {
  const state = await readDynamoDbState(client, tableName);
  return state.tasks.filter((t) => !isTerminal(t.state)).length;
}
