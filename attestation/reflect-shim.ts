/**
 * Minimal Reflect metadata shim, installed only when no polyfill is present.
 *
 * Why: @peculiar/x509 2.x uses tsyringe, which throws at import time unless
 * `Reflect.getMetadata` exists ("tsyringe requires a reflect polyfill"), and the project
 * does not depend on `reflect-metadata`. tsyringe only calls getMetadata, getOwnMetadata
 * and defineMetadata (for `design:paramtypes` and its own tokens), and @peculiar/x509's
 * injectable classes take no constructor parameters, so this subset is sufficient.
 * Replace this module with `import 'reflect-metadata'` once that dependency is added.
 *
 * Must be imported before '@peculiar/x509' (ES modules evaluate imports in order).
 */

type MetaKey = unknown;
type Target = object;
type PropKey = string | symbol | undefined;

interface ReflectMetadataApi {
  getMetadata?: (key: MetaKey, target: Target, prop?: PropKey) => unknown;
  getOwnMetadata?: (key: MetaKey, target: Target, prop?: PropKey) => unknown;
  defineMetadata?: (key: MetaKey, value: unknown, target: Target, prop?: PropKey) => void;
  hasMetadata?: (key: MetaKey, target: Target, prop?: PropKey) => boolean;
  hasOwnMetadata?: (key: MetaKey, target: Target, prop?: PropKey) => boolean;
}

const R = Reflect as unknown as ReflectMetadataApi;

if (typeof R.getMetadata !== 'function') {
  const store = new WeakMap<Target, Map<PropKey, Map<MetaKey, unknown>>>();
  const own = (target: Target, prop: PropKey): Map<MetaKey, unknown> | undefined => store.get(target)?.get(prop);
  const getOwn = (key: MetaKey, target: Target, prop?: PropKey): unknown => own(target, prop)?.get(key);
  const hasOwn = (key: MetaKey, target: Target, prop?: PropKey): boolean => own(target, prop)?.has(key) ?? false;
  const walk = <T>(target: Target, f: (o: Target) => T | undefined): T | undefined => {
    for (let o: Target | null = target; o !== null; o = Object.getPrototypeOf(o) as Target | null) {
      const v = f(o);
      if (v !== undefined) return v;
    }
    return undefined;
  };
  Object.assign(R, {
    getOwnMetadata: getOwn,
    hasOwnMetadata: hasOwn,
    getMetadata: (key: MetaKey, target: Target, prop?: PropKey) =>
      walk(target, (o) => (hasOwn(key, o, prop) ? { v: getOwn(key, o, prop) } : undefined))?.v,
    hasMetadata: (key: MetaKey, target: Target, prop?: PropKey) => walk(target, (o) => hasOwn(key, o, prop) || undefined) ?? false,
    defineMetadata: (key: MetaKey, value: unknown, target: Target, prop?: PropKey) => {
      let byProp = store.get(target);
      if (!byProp) store.set(target, (byProp = new Map()));
      let byKey = byProp.get(prop);
      if (!byKey) byProp.set(prop, (byKey = new Map()));
      byKey.set(key, value);
    },
  } satisfies ReflectMetadataApi);
}

export {};
