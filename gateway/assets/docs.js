// The human-readable REST API docs: renders the server's own OpenAPI document
// (/api/docs/openapi.json) into a list of routes, parameters, bodies, responses, schemas and
// examples. Works offline; everything is rendered as text.
'use strict';

(() => {
  const METHODS = ['get', 'post', 'put', 'patch', 'delete'];
  const $ = (id) => document.getElementById(id);

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function code(text) {
    return element('code', '', text);
  }

  function pre(value) {
    return element('pre', '', typeof value === 'string' ? value : JSON.stringify(value, null, 2));
  }

  const refName = (ref) => ref.split('/').pop();

  /** A schema in one line: `integer (int64, ≥ 1)`, `array of Message`, `string | array of string`. */
  function typeText(schema) {
    if (!schema) return 'any';
    if (schema.$ref) return refName(schema.$ref);
    for (const key of ['oneOf', 'anyOf']) {
      if (schema[key]) return schema[key].map(typeText).join(' | ');
    }
    if (schema.allOf) return schema.allOf.map(typeText).join(' & ');
    let types = Array.isArray(schema.type) ? schema.type : [schema.type ?? 'any'];
    types = types.map((t) => (t === 'array' ? `array of ${typeText(schema.items)}` : t));
    const details = [];
    if (schema.format) details.push(schema.format);
    if (schema.minimum !== undefined) details.push(`≥ ${schema.minimum}`);
    if (schema.maximum !== undefined) details.push(`≤ ${schema.maximum}`);
    if (schema.enum) details.push(`one of ${schema.enum.map((v) => JSON.stringify(v)).join(', ')}`);
    if (schema.default !== undefined) details.push(`default ${JSON.stringify(schema.default)}`);
    return `${types.join(' | ')}${details.length ? ` (${details.join(', ')})` : ''}`;
  }

  function table(headings, rows) {
    const t = element('table', 'params');
    const head = element('tr');
    for (const h of headings) head.append(element('th', '', h));
    t.append(head);
    for (const cells of rows) {
      const tr = element('tr');
      for (const cell of cells) {
        const td = element('td');
        td.append(typeof cell === 'string' ? document.createTextNode(cell) : cell);
        tr.append(td);
      }
      t.append(tr);
    }
    return t;
  }

  /** Examples of a media type or schema: `[title, value]` of `example`, then of each of `examples`. */
  function examplesOf(holder) {
    const found = [];
    if (holder.example !== undefined) found.push(['Example', holder.example]);
    const examples = holder.examples ?? {};
    for (const [name, ex] of Object.entries(examples)) {
      // A schema's `examples` is a list of values; a media type's, named example objects.
      if (Array.isArray(examples)) found.push(['Example', ex]);
      else found.push([`Example: ${ex.summary ?? name}`, ex.value]);
    }
    return found;
  }

  function renderContent(container, content) {
    for (const [mediaType, media] of Object.entries(content ?? {})) {
      const line = element('p');
      line.append(code(mediaType), document.createTextNode(`: ${typeText(media.schema)}`));
      container.append(line);
      for (const [title, value] of examplesOf(media)) container.append(element('p', '', title), pre(value));
    }
  }

  function renderOperation(path, method, op) {
    const box = element('section', 'operation');
    box.id = op.operationId ?? `${method}-${path}`;
    const title = element('h3');
    title.append(element('span', `method ${method}`, method), document.createTextNode(path));
    box.append(title);
    if (op.summary) box.append(element('p', '', op.summary));
    if (op.description) box.append(element('p', '', op.description));
    if (op.security?.length) {
      // An empty requirement makes the others optional: here, none in development mode.
      const schemes = op.security.flatMap((s) => Object.keys(s));
      const optional = op.security.some((s) => Object.keys(s).length === 0);
      const text = `Authentication: ${schemes.join(' or ') || 'none'}${optional && schemes.length ? ' (in JWT mode; none in development mode)' : ''}`;
      box.append(element('p', '', text));
    }
    if (op.parameters?.length) {
      box.append(element('h4', '', 'Parameters'));
      box.append(table(['name', 'in', 'type', 'required', 'description', 'example'], op.parameters.map((p) => [
        code(p.name),
        p.in,
        typeText(p.schema),
        p.required ? 'yes' : 'no',
        p.description ?? '',
        p.example === undefined ? '' : JSON.stringify(p.example),
      ])));
    }
    if (op.requestBody) {
      box.append(element('h4', '', `Request body${op.requestBody.required ? ' (required)' : ''}`));
      if (op.requestBody.description) box.append(element('p', '', op.requestBody.description));
      renderContent(box, op.requestBody.content);
    }
    box.append(element('h4', '', 'Responses'));
    for (const [status, response] of Object.entries(op.responses ?? {})) {
      const line = element('p');
      line.append(element('strong', '', status), document.createTextNode(` ${response.description ?? ''}`));
      box.append(line);
      renderContent(box, response.content);
    }
    return box;
  }

  function renderSchema(name, schema) {
    const box = element('section', 'operation');
    box.id = `schema-${name}`;
    box.append(element('h3', '', name));
    if (schema.description) box.append(element('p', '', schema.description));
    if (schema.properties) {
      const required = new Set(schema.required ?? []);
      box.append(table(['field', 'type', 'required', 'description'], Object.entries(schema.properties).map(
        ([field, s]) => [code(field), typeText(s), required.has(field) ? 'yes' : 'no', s.description ?? ''],
      )));
    } else {
      box.append(element('p', '', typeText(schema)));
    }
    for (const [title, value] of examplesOf(schema)) box.append(element('p', '', title), pre(value));
    return box;
  }

  function renderAuth(doc) {
    const schemes = doc.components?.securitySchemes ?? {};
    const section = $('auth');
    if (Object.keys(schemes).length === 0) return;
    section.append(element('h2', '', 'Authentication'));
    for (const [name, scheme] of Object.entries(schemes)) {
      const line = element('p');
      const kind = scheme.type === 'http' ? `HTTP ${scheme.scheme}${scheme.bearerFormat ? ` (${scheme.bearerFormat})` : ''}` : scheme.type;
      line.append(code(name), document.createTextNode(`: ${kind}. ${scheme.description ?? ''}`));
      section.append(line);
    }
  }

  async function main() {
    let doc;
    try {
      const response = await fetch('/api/docs/openapi.json');
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      doc = await response.json();
    } catch (e) {
      $('intro').textContent = `Could not load /api/docs/openapi.json: ${e.message}`;
      return;
    }
    document.title = `${doc.info.title} — REST API ${doc.info.version}`;
    const intro = $('intro');
    intro.replaceChildren(
      element('strong', '', `${doc.info.title} ${doc.info.version}`),
      document.createTextNode(` · OpenAPI ${doc.openapi}. ${doc.info.description ?? ''}`),
    );
    renderAuth(doc);
    const operations = $('operations');
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
      for (const method of METHODS) {
        if (item[method]) operations.append(renderOperation(path, method, item[method]));
      }
    }
    const schemas = $('schemas');
    for (const [name, schema] of Object.entries(doc.components?.schemas ?? {})) {
      schemas.append(renderSchema(name, schema));
    }
    document.body.dataset.ready = 'true';
  }

  main();
})();
