// Field paths (`user.email`, `*.ssn`, `**.password`) compiled once, at init, into one trie
// over object keys. While a body is scanned, the matcher's state is the set of trie nodes the
// keys so far lead to: one node for paths without `**` (a key costs one map lookup), a few
// more where `**` is pending.

/** The most paths a config may name, and the most keys in one; they bound the trie. */
export const MAX_PATHS = 256;
export const MAX_SEGMENTS = 32;

export class PathError extends Error {}

/**
 * Splits a path into segments: `.` separates keys, `*` alone is any one key, `**` alone is any
 * number of keys (zero or more), and `\` escapes the next character (`a\.b` is the key `a.b`,
 * `\*` the key `*`).
 *
 * Returns an array of segments: `{ any: true }`, `{ deep: true }` or `{ key: "..." }`.
 */
export function parsePath(text) {
  if (typeof text !== 'string' || text === '') throw new PathError('must be a non-empty string');
  const segments = [];
  let key = '';
  let escaped = false;
  let plainStars = true; // whether the segment so far holds nothing but unescaped `*`
  const close = () => {
    if (key === '') throw new PathError(`empty key in \`${text}\``);
    if (plainStars && key === '*') segments.push({ any: true });
    else if (plainStars && key === '**') segments.push({ deep: true });
    else if (plainStars && /^\*+$/.test(key)) {
      throw new PathError(`\`${key}\` is neither \`*\` nor \`**\` (write \\* for a literal star)`);
    } else segments.push({ key });
    key = '';
    plainStars = true;
  };
  for (const c of text) {
    if (escaped) {
      key += c;
      plainStars = false;
      escaped = false;
    } else if (c === '\\') {
      escaped = true;
    } else if (c === '.') {
      close();
    } else {
      if (c !== '*') plainStars = false;
      key += c;
    }
  }
  if (escaped) throw new PathError(`\`${text}\` ends with a lone \\`);
  close();
  if (segments.length > MAX_SEGMENTS) throw new PathError(`has more than ${MAX_SEGMENTS} keys`);
  const last = segments[segments.length - 1];
  if (last.deep) {
    // `a.**` would mask `a` itself (zero keys) and everything under it: name `a` instead.
    throw new PathError('`**` must be followed by a key or `*`');
  }
  for (let i = 1; i < segments.length; i++) {
    if (segments[i].deep && segments[i - 1].deep) throw new PathError('`**.**` is `**`');
  }
  return segments;
}

class Node {
  constructor() {
    /** Key -> Node for the keys paths name here. */
    this.keys = new Map();
    /** The node `*` leads to, and the node `**` leads to. */
    this.any = null;
    this.deep = null;
    /** Whether this node is the target of `**`, which keeps matching key after key. */
    this.isDeep = false;
    /** The rule of the first listed path ending here, and that path's index. */
    this.rule = null;
    this.order = Infinity;
    /** The state that holds this node alone (with the `**` node after it). */
    this.solo = null;
    this.id = 0;
    this.mark = 0;
  }
}

/** A matcher state: the live trie nodes, and the rule that masks a value here (or null). */
class State {
  constructor(nodes, shared) {
    this.nodes = nodes;
    this.shared = shared;
    this.rule = null;
    let order = Infinity;
    for (const n of nodes) {
      if (n.order < order) {
        order = n.order;
        this.rule = n.rule;
      }
    }
    /** Key -> State where `**` is pending or several nodes are live: keys repeat in bodies. */
    this.cache = nodes.length > 1 || nodes[0].isDeep ? new Map() : null;
  }
}

// Bounds on what matching remembers across requests, whatever keys the bodies hold: states of
// several nodes are interned up to MAX_INTERNED, each caching up to MAX_CACHED transitions.
const MAX_INTERNED = 4096;
const MAX_CACHED = 256;

/**
 * Compiles `[{ segments, rule }]` and returns the start state. Where several paths end at a
 * value, the first listed wins.
 */
export function compile(paths) {
  const root = new Node();
  const all = [root];
  const shared = { interned: new Map(), epoch: 0 };
  const child = (node, seg) => {
    if (seg.deep) {
      if (!node.deep) {
        node.deep = new Node();
        node.deep.isDeep = true;
        all.push(node.deep);
      }
      return node.deep;
    }
    if (seg.any) {
      if (!node.any) all.push((node.any = new Node()));
      return node.any;
    }
    let n = node.keys.get(seg.key);
    if (!n) {
      n = new Node();
      node.keys.set(seg.key, n);
      all.push(n);
    }
    return n;
  };
  paths.forEach(({ segments, rule }, index) => {
    let node = root;
    for (const seg of segments) node = child(node, seg);
    if (index < node.order) {
      node.order = index;
      node.rule = rule;
    }
  });
  all.forEach((n, id) => {
    n.id = id;
  });
  for (const n of all) n.solo = intern(n.deep ? [n, n.deep] : [n], shared);
  return root.solo;
}

function intern(nodes, shared) {
  if (nodes.length === 1) return nodes[0].solo ?? new State(nodes, shared);
  const id = nodes.map((n) => n.id).sort((a, b) => a - b).join(',');
  let s = shared.interned.get(id);
  if (s === undefined) {
    s = new State(nodes, shared);
    if (shared.interned.size < MAX_INTERNED) shared.interned.set(id, s);
  }
  return s;
}

/** Where `key` leads from `state` (null: nothing below can match). */
export function next(state, key) {
  const nodes = state.nodes;
  if (nodes.length === 1 && !nodes[0].isDeep) {
    // No `**` pending: a lookup, unless both a named key and `*` go on from here.
    const n = nodes[0];
    const named = n.keys.get(key);
    if (named === undefined) return n.any === null ? null : n.any.solo;
    if (n.any === null) return named.solo;
  }
  const cache = state.cache;
  if (cache !== null) {
    const hit = cache.get(key);
    if (hit !== undefined) return hit;
  }
  const shared = state.shared;
  const mark = ++shared.epoch;
  const out = [];
  const add = (n) => {
    if (n !== undefined && n !== null && n.mark !== mark) {
      n.mark = mark;
      out.push(n);
      // `**` may match no key at all: the node after a path's key also stands where `**` is.
      if (n.deep !== null && n.deep.mark !== mark) {
        n.deep.mark = mark;
        out.push(n.deep);
      }
    }
  };
  for (const n of nodes) {
    if (n.isDeep) add(n);
    add(n.keys.get(key));
    add(n.any);
  }
  const to = out.length === 0 ? null : intern(out, shared);
  if (cache !== null && cache.size < MAX_CACHED) cache.set(key, to);
  return to;
}
