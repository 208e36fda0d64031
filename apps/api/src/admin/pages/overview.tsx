/** @jsxImportSource hono/jsx */
import { type LastHour, MINUTES, readLastHour } from '../../read-model/last-hour.ts';
import { BarList, ColumnChart, figure } from '../charts.tsx';
import type { AdminContext } from '../context.ts';
import { Card, renderPage } from '../views.tsx';
import { DeliveriesNeedingOperator, deliveryCounts } from './deliveries.tsx';

/** The accessible names of the four charts: a test finds each by its role and the start of its name. */
export const chartNames = {
  sales: 'Committed sales per minute',
  refusals: 'Refusals by code',
  depth: 'Queue depth per partition',
  latency: 'p99 submit to commit latency per minute',
} as const;

const hhmm = (date: Date) => date.toISOString().slice(11, 16);
const ms = (value: number) => `${figure(value)} ms`;
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
const partitionName = (partition: number) => `Partition ${String(partition).padStart(2, '0')}`;

function Charts({ hour }: { hour: LastHour }) {
  const sales = sum(hour.salesPerMinute.map((m) => m.count));
  const refusals = sum(hour.refusalsByCode.map((r) => r.count));
  const open = sum(hour.partitions.map((p) => p.open));
  const redisDown = hour.partitions.some((p) => p.queueMessages === null);
  const messages = sum(hour.partitions.map((p) => p.queueMessages ?? 0));
  const p99 = hour.p99Ms === null ? 'no job finished' : ms(hour.p99Ms);
  const span = `last ${MINUTES} minutes`;

  return (
    <>
      <div class="cards">
        <Card label="Sales committed">{figure(sales)}</Card>
        <Card label="Refusals">{figure(refusals)}</Card>
        <Card label="Open jobs (PostgreSQL)">{figure(open)}</Card>
        <Card label="p99 submit → commit">{p99}</Card>
      </div>

      <section class="chart-box">
        <h2>Committed sales per minute</h2>
        <ColumnChart
          label={`${chartNames.sales}, ${span}: ${figure(sales)} in all`}
          bars={hour.salesPerMinute.map((m) => ({
            key: m.minute.toISOString(),
            label: hhmm(m.minute),
            value: m.count,
          }))}
          color="#1f5fa8"
          unit="sales"
          axis="minute of commit (UTC)"
          labelEvery={10}
          whole
        />
      </section>

      <section class="chart-box">
        <h2>Refusals by code</h2>
        <BarList
          label={`${chartNames.refusals}, ${span}: ${figure(refusals)} in all`}
          rows={hour.refusalsByCode.map((r) => ({ key: r.code, label: r.code, values: [r.count] }))}
          series={[{ name: 'jobs rejected', color: '#b3261e' }]}
          axis="jobs rejected"
          none="No job was rejected in the last hour."
          whole
        />
      </section>

      <section class="chart-box">
        <h2>Queue depth per partition, now</h2>
        <p class="muted">
          Open jobs are the jobs PostgreSQL records as queued or processing: the depth of record. A queue message
          carries the jobs of a partition accepted together, so Redis may count fewer messages than jobs.
          {redisDown && ' Redis did not answer: no message counts.'}
        </p>
        <BarList
          label={`${chartNames.depth}, now: ${figure(open)} open jobs in PostgreSQL, ${
            redisDown ? 'Redis unavailable' : `${figure(messages)} queue messages in Redis`
          }`}
          rows={hour.partitions.map((p) => ({
            key: String(p.partition),
            label: partitionName(p.partition),
            values: [p.open, p.queueMessages],
          }))}
          series={[
            { name: 'open jobs (PostgreSQL)', color: '#1f3a5f' },
            { name: 'queue messages (Redis)', color: '#8fb3dd' },
          ]}
          axis="jobs or messages"
          none="No partition."
          empty="Redis did not answer"
          whole
        />
      </section>

      <section class="chart-box">
        <h2>p99 submit → commit latency</h2>
        <ColumnChart
          label={`${chartNames.latency}, ${span}: ${p99} overall`}
          bars={hour.p99PerMinute.map((m) => ({ key: m.minute.toISOString(), label: hhmm(m.minute), value: m.p99Ms }))}
          reference={{ key: 'overall', label: 'p99 of the hour', value: hour.p99Ms }}
          color="#6a4c93"
          unit="ms"
          format={ms}
          axis="minute of commit (UTC)"
          labelEvery={10}
          empty="no job finished"
        />
      </section>
    </>
  );
}

/** `GET /admin`: the last hour at a glance, the same numbers as `GET /api/overview`. */
export async function overviewPage(c: AdminContext) {
  const { db, queues } = c.var.deps;
  const [hour, deliveries] = await Promise.all([readLastHour(db, queues), deliveryCounts(db)]);
  return renderPage(
    c,
    'Overview',
    'overview',
    <>
      <h1>The last hour</h1>
      <p class="muted">
        Jobs finished from {hhmm(hour.from)} to {hhmm(hour.to)} UTC (the current minute is still going on), and the
        queues as they stand now. A job counts once its outcome is committed; one submitted before{' '}
        {hhmm(hour.submittedSince)} UTC is not counted. Reload the page for newer numbers;{' '}
        <code>GET /api/overview</code> gives them as JSON to the admin token.
      </p>
      <DeliveriesNeedingOperator counts={deliveries} />
      <Charts hour={hour} />
    </>,
  );
}
