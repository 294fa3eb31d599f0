import { Duration } from 'aws-cdk-lib';
import type { HttpApi } from 'aws-cdk-lib/aws-apigatewayv2';
import { Alarm, ComparisonOperator, type IMetric, TreatMissingData } from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { pascalCase } from './queues.js';

export interface ObservabilityProps {
  /** The dead-letter queues by name: any message in one is a message the control plane gave up on. */
  deadLetterQueues: ReadonlyMap<string, IQueue>;
  /** The functions by name. */
  functions: ReadonlyMap<string, IFunction>;
  api: HttpApi;
  /** Subscribed to the alarm topic when given; confirm the subscription from the first email. */
  alarmEmail?: string;
  /**
   * Encrypts the alarm topic. Its key policy must let CloudWatch (`cloudwatch.amazonaws.com`)
   * use it, as infra/constructs/keys.ts does: alarms cannot publish to a topic under the AWS
   * managed SNS key.
   */
  topicKey: IKey;
}

/**
 * The alarms, all on the topic {@link Observability.alarmTopic}. Each fires on the first
 * occurrence: a new deployment should hear about every dead letter, function error, throttle and
 * 5xx; raise thresholds once the normal rate is known. Logs are structured JSON from Powertools,
 * keyed by the service name the functions set (POWERTOOLS_SERVICE_NAME).
 */
export class Observability extends Construct {
  readonly alarmTopic: Topic;
  readonly alarms: Alarm[] = [];

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    // SNS's default access policy stays: it is what lets CloudWatch alarms of this account publish.
    this.alarmTopic = new Topic(this, 'AlarmTopic', {
      displayName: 'GPUAI alarms',
      masterKey: props.topicKey,
    });
    if (props.alarmEmail !== undefined) {
      this.alarmTopic.addSubscription(new EmailSubscription(props.alarmEmail));
    }
    const period = Duration.minutes(5);

    for (const [name, queue] of props.deadLetterQueues) {
      this.#alarm(
        `DeadLetters${pascalCase(name)}`,
        `Messages of ${name} were dead-lettered: inspect them, fix the cause, then redrive`,
        queue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
      );
    }
    for (const [name, fn] of props.functions) {
      this.#alarm(
        `Errors${pascalCase(name)}`,
        `The ${name} function failed`,
        fn.metricErrors({ period, statistic: 'Sum' }),
      );
      this.#alarm(
        `Throttles${pascalCase(name)}`,
        `The ${name} function was throttled: raise the account's concurrency`,
        fn.metricThrottles({ period, statistic: 'Sum' }),
      );
    }
    this.#alarm('Api5xx', 'The API answered 5xx', props.api.metricServerError({ period, statistic: 'Sum' }));
  }

  #alarm(id: string, description: string, metric: IMetric): void {
    const alarm = new Alarm(this, id, {
      alarmDescription: description,
      metric,
      threshold: 0,
      comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      // No data means no dead letters, errors or requests.
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    const action = new SnsAction(this.alarmTopic);
    alarm.addAlarmAction(action);
    alarm.addOkAction(action);
    this.alarms.push(alarm);
  }
}
