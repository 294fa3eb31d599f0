import {
  BucketAlreadyOwnedByYou,
  type BucketLocationConstraint,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  NoSuchKey,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import {
  assertBlobKey,
  assertContentType,
  assertPresignExpiry,
  type Blobs,
  defaultBlobContentType,
  type PresignedRequest,
  type PresignOptions,
  type PresignPutOptions,
  type PutOptions,
} from '../../ports/blobs.js';
import { type Clock, systemClock } from '../../ports/clock.js';

/**
 * The {@link Blobs} port on one S3 bucket, with SigV4 presigned URLs. A presigned upload with a
 * content type signs the `Content-Type` header, so S3 refuses the upload under any other.
 *
 * The client must be built with `requestChecksumCalculation: 'WHEN_REQUIRED'`: by default the SDK
 * signs the CRC32 of the (absent, so empty) body into a presigned upload's URL, and S3 then refuses
 * every upload that is not empty. {@link presignPut} refuses to run with such a client. Direct
 * uploads ask for a CRC32 themselves, so they keep an end-to-end checksum either way. Against an
 * emulator the client also needs `forcePathStyle: true`.
 */
export class S3Blobs implements Blobs {
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #clock: Clock;

  /**
   * @param client a client for the bucket's region; the caller owns it and destroys it.
   * @param clock dates the signatures, so `expiresAt` agrees with the URL (AWS checks against its own time).
   */
  constructor(client: S3Client, bucket: string, clock: Clock = systemClock) {
    this.#client = client;
    this.#bucket = bucket;
    this.#clock = clock;
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<void> {
    assertBlobKey(key);
    const contentType = options.contentType ?? defaultBlobContentType;
    assertContentType(contentType);
    await this.#client.send(
      new PutObjectCommand({
        Bucket: this.#bucket,
        Key: key,
        Body: body,
        ContentType: contentType,
        ChecksumAlgorithm: 'CRC32',
      }),
    );
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    assertBlobKey(key);
    try {
      const { Body } = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }));
      if (Body === undefined) {
        throw new Error(`S3 answered GetObject for ${key} without a body`);
      }
      return await Body.transformToByteArray();
    } catch (error) {
      if (error instanceof NoSuchKey) return undefined;
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    assertBlobKey(key);
    // S3 answers 204 for a missing key too: deleting is idempotent without a check.
    await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }));
  }

  async presignPut(key: string, options: PresignPutOptions): Promise<PresignedRequest> {
    assertBlobKey(key);
    assertPresignExpiry(options.expiresInSeconds);
    const { contentType } = options;
    if (contentType !== undefined) {
      assertContentType(contentType);
    }
    if ((await this.#client.config.requestChecksumCalculation()) !== 'WHEN_REQUIRED') {
      throw new Error(
        "S3Blobs cannot presign uploads through a client whose requestChecksumCalculation is not 'WHEN_REQUIRED': " +
          'the URL would carry the checksum of an empty body and S3 would refuse every upload',
      );
    }
    const command = new PutObjectCommand({
      Bucket: this.#bucket,
      Key: key,
      ...(contentType === undefined ? {} : { ContentType: contentType }),
    });
    // The presigner leaves Content-Type unsigned unless told to sign it.
    const signed = contentType === undefined ? {} : { signableHeaders: new Set(['content-type']) };
    return {
      ...(await this.#presign(command, options.expiresInSeconds, signed)),
      method: 'PUT',
      headers: contentType === undefined ? {} : { 'content-type': contentType },
    };
  }

  async presignGet(key: string, options: PresignOptions): Promise<PresignedRequest> {
    assertBlobKey(key);
    assertPresignExpiry(options.expiresInSeconds);
    const command = new GetObjectCommand({ Bucket: this.#bucket, Key: key });
    return { ...(await this.#presign(command, options.expiresInSeconds, {})), method: 'GET', headers: {} };
  }

  async #presign(
    command: PutObjectCommand | GetObjectCommand,
    expiresInSeconds: number,
    options: { signableHeaders?: Set<string> },
  ): Promise<{ url: string; expiresAt: number }> {
    // SigV4 dates a signature to the second, and the URL expires that many seconds after it.
    const signedAt = Math.floor(this.#clock.now() / 1000) * 1000;
    const url = await getSignedUrl(this.#client, command, {
      ...options,
      expiresIn: expiresInSeconds,
      signingDate: new Date(signedAt),
    });
    return { url, expiresAt: signedAt + expiresInSeconds * 1000 };
  }
}

/**
 * Creates a private bucket in the client's region; a bucket this account owns already is left as
 * it is. For tests and emulators: the cloud deployment's bucket comes from the CDK stack.
 */
export async function createBucket(client: S3Client, name: string): Promise<void> {
  const region = await client.config.region();
  try {
    await client.send(
      new CreateBucketCommand({
        Bucket: name,
        // us-east-1 is the one region that refuses to be named as a location constraint.
        ...(region === 'us-east-1'
          ? {}
          : { CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint } }),
      }),
    );
  } catch (error) {
    if (!(error instanceof BucketAlreadyOwnedByYou)) throw error;
  }
}
