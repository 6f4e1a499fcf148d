// Rebuilds the ServiceMonitor CRD from the schema embedded in the npm package
// @kubernetes-models/prometheus-operator@1.6.3 (file monitoring.coreos.com/v1/ServiceMonitor.js),
// undoing the changes its generator made to the CRD's openAPIV3Schema. Usage:
//   npm pack @kubernetes-models/prometheus-operator@1.6.3 && tar xzf kubernetes-models-prometheus-operator-1.6.3.tgz
//   node extract-servicemonitor.cjs package/monitoring.coreos.com/v1/ServiceMonitor.js > monitoring.coreos.com_servicemonitors.json
'use strict';
const Module = require('module');
const path = require('path');

// Load the model file with stand-ins for its dependencies, keeping the schema it registers.
let embedded;
const load = Module._load;
Module._load = function (request, parent, isMain) {
  if (request === '@kubernetes-models/validate') return { register: (id, schema) => { embedded = schema; } };
  if (request === '@kubernetes-models/base') return { Model: class { static setSchema(c, id, init) { init(); } } };
  if (request.startsWith('kubernetes-models/')) return { addSchema() {} };
  if (request === 'tslib') return {};
  return load.apply(this, arguments);
};
require(path.resolve(process.argv[2]));
if (!embedded) throw new Error('no schema registered by ' + process.argv[2]);

const isNull = (s) => s && s.type === 'null' && Object.keys(s).length === 1;
const isIntOrString = (s) => s && Array.isArray(s.anyOf) && Object.keys(s).length === 1 && s.anyOf.length === 2 &&
  s.anyOf[0].type === 'integer' && s.anyOf[1].type === 'string';

// The generator wrapped optional fields in {oneOf: [X, {type: null}]}, marked them nullable, and
// spelled x-kubernetes-int-or-string as anyOf [integer, string]: undo all three.
function revert(s) {
  if (Array.isArray(s)) return s.map(revert);
  if (!s || typeof s !== 'object') return s;
  if (Array.isArray(s.oneOf) && s.oneOf.length === 2 && isNull(s.oneOf[1]) && Object.keys(s).length === 1) {
    return revert(s.oneOf[0]);
  }
  if (isIntOrString(s)) return { 'x-kubernetes-int-or-string': true };
  const out = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === 'nullable') continue;
    out[k] = (k === 'properties' || k === 'patternProperties')
      ? Object.fromEntries(Object.entries(v).map(([name, p]) => [name, revert(p)]))
      : revert(v);
  }
  return out;
}

const schema = {
  type: 'object',
  properties: {
    apiVersion: { type: 'string' },
    kind: { type: 'string' },
    metadata: { type: 'object' },
    spec: revert(embedded.properties.spec),
  },
  required: embedded.required.filter((r) => r !== 'apiVersion' && r !== 'kind'),
};
const crd = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: {
    name: 'servicemonitors.monitoring.coreos.com',
    annotations: {
      'validate-manifests/origin': 'npm @kubernetes-models/prometheus-operator@1.6.3, monitoring.coreos.com/v1/ServiceMonitor.js; see README.md',
    },
  },
  spec: {
    group: 'monitoring.coreos.com',
    names: { kind: 'ServiceMonitor', listKind: 'ServiceMonitorList', plural: 'servicemonitors', singular: 'servicemonitor' },
    scope: 'Namespaced',
    versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: schema } }],
  },
};
process.stdout.write(JSON.stringify(crd, null, 2) + '\n');
