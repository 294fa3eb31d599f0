import { CfnResource } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

/** A checkov check that does not apply to a resource, and why; see {@link skipCheckov}. */
export interface CheckovSkip {
  /** The check's id, e.g. `CKV_AWS_117`. */
  id: string;
  /** Why the finding does not apply here: read by whoever reviews the template, so a real reason. */
  comment: string;
}

/**
 * Records in a resource's CloudFormation metadata that checkov should skip these checks, in the
 * form checkov reads (`Metadata: { checkov: { skip: [{ id, comment }] } }`), so the reason sits
 * beside the resource in the template rather than in a flag of the linter's command line.
 * test/infra/template-lint.test.ts runs checkov with every check on and fails on any other finding.
 *
 * `scope` is the resource itself or an L2 construct whose default child is the resource.
 */
export function skipCheckov(scope: IConstruct, ...skips: CheckovSkip[]): void {
  const resource = scope instanceof CfnResource ? scope : scope.node.defaultChild;
  if (!(resource instanceof CfnResource)) {
    throw new Error(`${scope.node.path} has no CloudFormation resource to carry checkov metadata`);
  }
  const existing = (resource.getMetadata('checkov') as { skip?: CheckovSkip[] } | undefined)?.skip ?? [];
  const ids = new Set(existing.map((skip) => skip.id));
  for (const skip of skips) {
    if (ids.has(skip.id)) throw new Error(`${scope.node.path} already skips ${skip.id}`);
    if (skip.comment.trim().length < 20) throw new Error(`skipping ${skip.id} needs a reason, not "${skip.comment}"`);
  }
  resource.addMetadata('checkov', { skip: [...existing, ...skips] });
}
