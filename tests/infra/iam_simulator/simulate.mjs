// Evaluate IAM requests with @cloud-copilot/iam-simulate: reads a JSON list of simulations on stdin and writes one
// verdict per simulation ("Allowed", "ExplicitlyDenied", "ImplicitlyDenied", or "error: ...") as a JSON list.
import { runSimulation } from '@cloud-copilot/iam-simulate'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const simulations = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const verdicts = []
for (const simulation of simulations) {
  const response = await runSimulation(
    { serviceControlPolicies: [], resourceControlPolicies: [], ...simulation },
    {}
  )
  verdicts.push(
    response.resultType === 'error' ? `error: ${JSON.stringify(response.errors)}` : response.overallResult
  )
}
process.stdout.write(JSON.stringify(verdicts))
