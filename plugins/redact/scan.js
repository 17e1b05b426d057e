// Masking JSON text in place: only the values of matched fields are replaced, and every other
// byte (number spelling, whitespace, key order, duplicate keys) is kept as the upstream sent it.
//
// In the component, script runs in an interpreter, so the work is pushed into native calls:
// `JSON.parse` checks the text strictly (RFC 8259) once, then `split('"')` cuts it into what
// lies between quotes, and script only walks the short runs between strings. The walk keeps its
// own stack, so nesting depth costs memory, not call stack.

import { next } from './matcher.js';

export class InvalidJson extends Error {}

const OBJECT = 0;
const ARRAY = 1;

/** Whether `s` ends with an odd number of backslashes (so the quote after it is escaped). */
function escapesQuote(s) {
  let n = 0;
  for (let i = s.length - 1; i >= 0 && s.charCodeAt(i) === 0x5c; i--) n++;
  return n % 2 === 1;
}

/**
 * Masks the fields `start` (a compiled matcher state) selects in `text`. Returns the new text,
 * or null when nothing matched. Throws InvalidJson when `text` is not one JSON value.
 */
export function redact(text, start) {
  try {
    JSON.parse(text);
  } catch (e) {
    // The engine's message says where, never what: no body content reaches the log.
    throw new InvalidJson(e instanceof SyntaxError ? e.message : String(e));
  }

  const parts = text.split('"');
  const out = [];
  let copied = 0; // text before this offset is already in `out`
  // The open containers: their kind and matcher state (null: nothing below can match).
  const kinds = [];
  const states = [];
  let state = start; // the matcher state of the next value
  let expectKey = false;
  // The value being masked: where it starts, its rule, the depth it sits at.
  let maskStart = -1;
  let maskRule = null;
  let maskDepth = -1;

  const begin = (pos) => {
    if (maskStart < 0 && state !== null && state.rule !== null) {
      maskStart = pos;
      maskRule = state.rule;
      maskDepth = kinds.length;
      state = null;
    }
  };
  const end = (pos) => {
    if (maskStart >= 0 && kinds.length === maskDepth) {
      out.push(text.slice(copied, maskStart), replacement(text.slice(maskStart, pos), maskRule));
      copied = pos;
      maskStart = -1;
    }
  };

  let offset = 0; // where parts[i] starts in text
  for (let i = 0; i < parts.length; ) {
    // Between strings: structure, numbers, literals, whitespace.
    const seg = parts[i];
    for (let j = 0; j < seg.length; j++) {
      const c = seg.charCodeAt(j);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
      if (c === 0x2c /* , */) {
        if (kinds[kinds.length - 1] === OBJECT) expectKey = true;
        else state = states[states.length - 1];
      } else if (c === 0x3a /* : */) {
        // The key before it has set `state`.
      } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
        begin(offset + j);
        kinds.push(c === 0x7b ? OBJECT : ARRAY);
        states.push(state);
        expectKey = c === 0x7b;
        // Arrays are transparent: their elements are matched as the array itself was.
      } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
        kinds.pop();
        states.pop();
        end(offset + j + 1);
      } else {
        // A number or a literal: it runs to the next delimiter.
        const live = state !== null || maskStart >= 0;
        if (live) begin(offset + j);
        let k = j + 1;
        for (; k < seg.length; k++) {
          const d = seg.charCodeAt(k);
          if (d === 0x2c || d === 0x7d || d === 0x5d || d === 0x20 || d === 0x0a || d === 0x0d || d === 0x09) break;
        }
        if (live) end(offset + k);
        j = k - 1;
      }
    }
    offset += seg.length + 1;
    i++;
    if (i >= parts.length) break;

    // A string: its parts run to a quote that no backslash escapes.
    const first = i;
    let len = parts[i].length;
    while (parts[i].endsWith('\\') && escapesQuote(parts[i])) {
      i++;
      len += 1 + parts[i].length;
    }
    i++;
    if (expectKey) {
      expectKey = false;
      const parent = states[states.length - 1];
      if (parent === null) {
        state = null;
      } else {
        const raw = first === i - 1 ? parts[first] : parts.slice(first, i).join('"');
        // An escaped key (`"em\u0061il"`) is matched by what it spells.
        state = next(parent, raw.indexOf('\\') < 0 ? raw : JSON.parse(`"${raw}"`));
      }
    } else if (state !== null || maskStart >= 0) {
      begin(offset - 1);
      end(offset + len + 1);
    }
    offset += len + 1;
  }
  if (out.length === 0) return null;
  out.push(text.slice(copied));
  return out.join('');
}

/** The JSON text that replaces a matched value (`raw`, valid JSON). */
function replacement(raw, rule) {
  if (rule.keepLast > 0 && raw.charCodeAt(0) === 0x22) {
    const chars = Array.from(JSON.parse(raw));
    // Never reveal a whole value: a short one is masked entirely.
    if (chars.length > rule.keepLast) {
      return JSON.stringify(rule.mask + chars.slice(chars.length - rule.keepLast).join(''));
    }
  }
  return rule.maskJson;
}
