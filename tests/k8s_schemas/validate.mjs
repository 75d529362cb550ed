// Validates Kubernetes custom resources against the CRD schemas that @kubernetes-models packages ship.
// stdin: a JSON array of objects; stdout: a JSON array with one entry per object, null when it is valid, else the
// validator's message. An object whose apiVersion/kind no installed package models is reported as such.
import * as argoRollouts from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1";
import * as istioNetworking from "@kubernetes-models/istio/networking.istio.io/v1";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "argoproj.io/v1alpha1": argoRollouts,
  "networking.istio.io/v1": istioNetworking,
  "keda.sh/v1alpha1": keda,
  "monitoring.coreos.com/v1": monitoring,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((object) => {
  const Model = models[object.apiVersion]?.[object.kind];
  if (!Model) return `no schema installed for ${object.apiVersion} ${object.kind}`;
  try {
    new Model(object).validate();
    return null;
  } catch (error) {
    return String(error.message ?? error);
  }
});
process.stdout.write(JSON.stringify(results));
