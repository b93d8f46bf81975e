/**
 * The set of models a server serves. Filled once, by boot, after every model has been
 * released, decrypted and loaded; until then the registry is not ready and serves nothing
 * (the inference service answers UNAVAILABLE).
 */
import type { InferenceSession } from 'onnxruntime-node';
import type { ModelSignature } from './tensors.js';

/** The parts of an onnxruntime InferenceSession the server uses (tests inject fakes). */
export type InferenceSessionLike = Pick<
  InferenceSession,
  'inputNames' | 'outputNames' | 'inputMetadata' | 'outputMetadata' | 'run' | 'release'
>;

export interface LoadedModel {
  readonly name: string;
  readonly version: string;
  readonly session: InferenceSessionLike;
  readonly signature: ModelSignature;
  /** True when the model came from a sealed file via attested key release. */
  readonly sealed: boolean;
  /** Lower-case hex SHA-256 of the plaintext ONNX bytes. */
  readonly sha256: string;
}

export class ModelRegistry {
  readonly #expected: readonly string[];
  readonly #models = new Map<string, LoadedModel>();
  #ready = false;

  /** `expected`: names of every configured model; ready only once all are published. */
  constructor(expected: readonly string[]) {
    this.#expected = Object.freeze([...expected]);
  }

  get expected(): readonly string[] {
    return this.#expected;
  }

  /** Whether every configured model is loaded and servable. */
  get ready(): boolean {
    return this.#ready;
  }

  isConfigured(name: string): boolean {
    return this.#expected.includes(name);
  }

  /** A model, only once the registry is ready. */
  get(name: string): LoadedModel | undefined {
    return this.#ready ? this.#models.get(name) : undefined;
  }

  /** Publishes all models at once; ready when they cover every expected name. */
  publish(models: readonly LoadedModel[]): void {
    for (const m of models) {
      if (!this.#expected.includes(m.name)) throw new Error(`model ${JSON.stringify(m.name)} was not configured`);
      this.#models.set(m.name, m);
    }
    this.#ready = this.#expected.every((n) => this.#models.has(n));
  }

  /** Marks the registry not ready and releases every session. */
  async close(): Promise<void> {
    this.#ready = false;
    const sessions = [...this.#models.values()].map((m) => m.session);
    this.#models.clear();
    await Promise.allSettled(sessions.map((s) => s.release()));
  }
}
