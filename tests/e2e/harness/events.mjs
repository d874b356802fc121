// End-to-end harness, socket event helpers: waiting for, collecting, ruling out and recording
// the events of a socket.io-client socket, and printing them in failure messages.

import assert from 'node:assert/strict';

/**
 * Resolves with the first argument of the next `event` on `socket`
 * (optionally the next one for which `filter(payload)` is true).
 */
export function once(socket, event, timeoutMs = 3000, filter = () => true) {
  return new Promise((resolve, reject) => {
    const onEvent = (...args) => {
      if (!filter(args[0])) return;
      cleanup();
      resolve(args[0]);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}" on ${label(socket)}`));
    }, timeoutMs);
    function cleanup() {
      clearTimeout(timer);
      socket.off(event, onEvent);
    }
    socket.on(event, onEvent);
  });
}

/**
 * Settles with the first of several events on `socket`: `handlers` maps each event name to a
 * function of its first argument, whose result resolves the promise (or whose throw rejects
 * it). No event within `timeoutMs`: rejects with `timeoutMessage`. The listeners are in place
 * when this returns, so an event emitted right after is not missed.
 */
export function firstOf(socket, handlers, timeoutMs, timeoutMessage) {
  return new Promise((resolve, reject) => {
    const listeners = Object.entries(handlers).map(([event, handle]) => [event, (payload) => {
      cleanup();
      try {
        resolve(handle(payload));
      } catch (error) {
        reject(error);
      }
    }]);
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(timeoutMessage));
    }, timeoutMs);
    function cleanup() {
      clearTimeout(timer);
      for (const [event, listener] of listeners) socket.off(event, listener);
    }
    for (const [event, listener] of listeners) socket.on(event, listener);
  });
}

/** Resolves with the first arguments of the next `count` `event`s on `socket`, in arrival order. */
export function collect(socket, event, count, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const onEvent = (payload) => {
      got.push(payload);
      if (got.length === count) {
        cleanup();
        resolve(got);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(
        `timed out after ${timeoutMs} ms: got ${got.length}/${count} "${event}" events on ${label(socket)}`,
      ));
    }, timeoutMs);
    function cleanup() {
      clearTimeout(timer);
      socket.off(event, onEvent);
    }
    socket.on(event, onEvent);
  });
}

/** Fails if `event` (matching `filter`) arrives on `socket` within `ms`. */
export function expectNone(socket, event, ms = 300, filter = () => true) {
  return new Promise((resolve, reject) => {
    const onEvent = (payload) => {
      if (!filter(payload)) return;
      cleanup();
      reject(new assert.AssertionError({
        message: `unexpected "${event}" on ${label(socket)}: ${safeJson(payload)}`,
        actual: payload,
        expected: undefined,
        operator: 'expectNone',
      }));
    };
    const timer = setTimeout(() => {
      cleanup();
      resolve();
    }, ms);
    function cleanup() {
      clearTimeout(timer);
      socket.off(event, onEvent);
    }
    socket.on(event, onEvent);
  });
}

/** Records every incoming event on `socket` (name + first arg) until stopped. */
export function recordEvents(socket) {
  const events = [];
  const listener = (name, payload) => events.push({ name, payload });
  socket.onAny(listener);
  return {
    events,
    names: () => events.map((e) => e.name),
    stop: () => socket.offAny(listener),
  };
}

export function label(socket) {
  return socket?.__label ?? 'socket';
}

export function safeJson(v) {
  try {
    const s = JSON.stringify(v);
    return s && s.length > 500 ? `${s.slice(0, 500)}…` : s;
  } catch {
    return String(v);
  }
}
