// A test fixture: on each request, fetches `http://users/users/<x-user>` (the upstream `users`,
// by name), and answers with what came back, or with why the call failed.

const encoder = new TextEncoder();

function reply(status, contentType, body) {
  return { tag: 'respond', val: { status, headers: [['content-type', contentType]], body } };
}

export const handler = {
  init(_config) {
    return { onRequest: true, onResponse: false, requestBody: false, responseBody: false };
  },

  // An async hook: componentize-js runs the event loop until the promise settles, so the
  // hook returns once the call is done.
  async onRequest(req) {
    const user = encodeURIComponent(req.header('x-user') ?? '');
    try {
      const resp = await fetch(`http://users/users/${user}`);
      const body = new Uint8Array(await resp.arrayBuffer());
      return reply(resp.status === 200 ? 200 : 502, 'application/json', body);
    } catch (e) {
      return reply(502, 'text/plain', encoder.encode(`call failed: ${e}`));
    }
  },

  onResponse(_req, _resp) {
    return { tag: 'continue' };
  },
};
