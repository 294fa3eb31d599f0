import { z } from 'zod';

/** Ids are a lowercase prefix, an underscore and 26 Crockford base32 characters (time-sortable). */
export const idPattern = (prefix: string) => new RegExp(`^${prefix}_[0-9A-HJKMNP-TV-Z]{26}$`);

export const JobId = z
  .string()
  .regex(idPattern('job'))
  .meta({ id: 'JobId', example: 'job_01JD7Z5C2Q9W8V6T4R2P0N8M6K' });
export const NodeId = z
  .string()
  .regex(/^node_[a-z2-7]{26}$/)
  .meta({ id: 'NodeId', description: 'Derived from the node public key: node_ + base32(sha256(key))[0..26].' });
/** A task id is its job id, a dot and the task's zero-based index. */
export const TaskId = z
  .string()
  .regex(/^job_[0-9A-HJKMNP-TV-Z]{26}\.\d{1,3}$/)
  .meta({ id: 'TaskId', example: 'job_01JD7Z5C2Q9W8V6T4R2P0N8M6K.0' });

export const Timestamp = z.iso
  .datetime({ offset: true })
  .max(64)
  .meta({ id: 'Timestamp', description: 'RFC 3339 date-time.' });
export const Sha256Hex = z
  .string()
  .regex(/^[0-9a-f]{64}$/)
  .meta({ id: 'Sha256Hex' });
export const Region = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,31}$/)
  .meta({ id: 'Region', example: 'eu-west', description: 'Lowercase slug, at most 32 characters.' });

/** The one error shape every 4xx and 5xx response carries. */
export const ErrorBody = z
  .object({
    error: z.object({
      code: z.string().meta({ example: 'validation_failed' }),
      message: z.string(),
      details: z.unknown().optional(),
      requestId: z.string().optional(),
    }),
  })
  .meta({ id: 'Error' });
export type ErrorBody = z.infer<typeof ErrorBody>;

/** Cursor pagination shared by list endpoints. */
export const PageQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(512).optional().meta({
    description: 'Opaque: the `cursor` of the previous page, as it was returned; anything else is 400 invalid_cursor.',
  }),
});

export const taskIdOf = (jobId: string, index: number): string => `${jobId}.${index}`;
export const parseTaskId = (taskId: string): { jobId: string; index: number } => {
  const dot = taskId.lastIndexOf('.');
  return { jobId: taskId.slice(0, dot), index: Number(taskId.slice(dot + 1)) };
};
