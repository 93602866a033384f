// Drives Plinth with the third-party Node.js MLflow client from npm
// ("mlflow", unmodified): argv = tracking URI, API key. Exits non-zero on
// the first mismatch. Its own debug output (it logs POST bodies) goes to
// stdout; our verdict is the last line.
const assert = require('assert')
const MLflow = require('mlflow')

const [endpoint, key] = process.argv.slice(2)
const client = new MLflow({ endpoint, headers: { Authorization: 'Bearer ' + key } })
const { Experiments, Runs, Metrics } = client

;(async () => {
	const { experiment_id } = await Experiments.create({ name: 'node-client' })
	assert.strictEqual(typeof experiment_id, 'string')
	const { experiment } = await Experiments.get({ experiment_id })
	assert.strictEqual(experiment.name, 'node-client')
	assert.strictEqual(experiment.lifecycle_stage, 'active')

	const { run } = await Runs.create({ experiment_id, start_time: Date.now(), tags: [{ key: 'mlflow.source.name', value: 'node' }] })
	const run_id = run.info.run_id
	assert.strictEqual(run.info.status, 'RUNNING')

	await Runs.logMetric({ run_id, key: 'auc', value: 0.71, timestamp: Date.now(), step: 0 })
	await Runs.logMetric({ run_id, key: 'auc', value: 0.83, timestamp: Date.now(), step: 1 })
	await Runs.logParameter({ run_id, key: 'lr', value: '0.1' })
	await Runs.setTag({ run_id, key: 'owner', value: 'node' })
	await Runs.logBatch({ run_id, metrics: [{ key: 'loss', value: 0.5, timestamp: Date.now(), step: 0 }], params: [{ key: 'depth', value: '4' }], tags: [] })
	await Runs.deleteTag({ run_id, key: 'owner' })

	const got = (await Runs.get({ run_id })).run
	const metrics = Object.fromEntries(got.data.metrics.map(m => [m.key, m.value]))
	assert.strictEqual(metrics.auc, 0.83)
	assert.strictEqual(metrics.loss, 0.5)
	const params = Object.fromEntries(got.data.params.map(p => [p.key, p.value]))
	assert.deepStrictEqual(params, { depth: '4', lr: '0.1' })
	assert.ok(!got.data.tags.some(t => t.key === 'owner'))

	const history = await Metrics.getHistory({ run_id, metric_key: 'auc' })
	assert.deepStrictEqual(history.metrics.map(m => m.value), [0.71, 0.83])

	const { runs } = await Runs.search({ experiment_ids: [experiment_id], filter: "metrics.auc > 0.8 and params.lr = '0.1'", order_by: ['metrics.auc DESC'] })
	assert.strictEqual(runs.length, 1)
	assert.strictEqual(runs[0].info.run_id, run_id)

	const { run_info } = await Runs.update({ run_id, status: 'FINISHED', end_time: Date.now() })
	assert.strictEqual(run_info.status, 'FINISHED')
	await Runs.delete({ run_id })
	assert.strictEqual((await Runs.get({ run_id })).run.info.lifecycle_stage, 'deleted')
	await Runs.restore({ run_id })

	let failed = null
	try {
		await Runs.logParameter({ run_id, key: 'lr', value: '0.2' })
	} catch (e) {
		failed = JSON.parse(String(e.message).replace(/^Error: /, ''))
	}
	assert.ok(failed, 'changing a param was accepted')
	assert.strictEqual(failed.status, 400)
	assert.strictEqual(failed.data.error_code, 'INVALID_PARAMETER_VALUE')

	await Experiments.update({ experiment_id, new_name: 'node-client-renamed' })
	await Experiments.delete({ experiment_id })
	await Experiments.restore({ experiment_id })
	console.log('NODE MLFLOW CLIENT OK')
})().catch(e => {
	console.error('NODE MLFLOW CLIENT FAILED:', e && e.stack || e)
	process.exit(1)
})
