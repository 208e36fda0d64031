/** @jsxImportSource hono/jsx */

/**
 * Charts drawn on the server as inline SVG: no script, nothing loaded, only presentation
 * attributes (the pages' CSP allows no script and inline styles only). Each chart is an image
 * with its label for assistive technology; each bar carries its number in a `<title>` (shown on
 * hover) and in `data-value`, with `data-key` naming what it counts, so a test can read them.
 */

/** One bar: what it counts (`key`), its axis label, and its value (null: nothing to measure). */
export interface Bar {
  key: string;
  label: string;
  value: number | null;
}

/** One row of horizontal bars, with a value per series. */
export interface BarRow {
  key: string;
  label: string;
  values: Array<number | null>;
}

export interface Series {
  name: string;
  color: string;
}

/** A whole number with thousands separators; other numbers to a tenth. */
export function figure(value: number): string {
  return value.toLocaleString('en-US', { maximumFractionDigits: 1 });
}

/** The smallest of 1, 2, 5 × 10^k at or above `max` (1 for nothing): a round top for an axis. */
export function niceCeiling(max: number): number {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) if (step * power >= max) return step * power;
  return 10 * power;
}

/** The axes' and labels' lettering, as presentation attributes (no stylesheet reaches into the SVG). */
const fontProps = { 'font-family': 'system-ui,sans-serif', 'font-size': '11', fill: '#5f6b7a' } as const;

const round = (n: number) => Math.round(n * 100) / 100;

/** The gridlines of an axis up to `ceiling`: its middle too, unless counts would read "0.5". */
const ticksTo = (ceiling: number, whole: boolean) =>
  whole && !Number.isInteger(ceiling / 2) ? [0, ceiling] : [0, ceiling / 2, ceiling];

interface ColumnChartProps {
  /** The image's accessible name: what the chart shows, with its totals. */
  label: string;
  bars: Bar[];
  color: string;
  /** The value axis' title, e.g. "sales". */
  unit: string;
  /** How a value reads in a bar's title. */
  format?: (value: number) => string;
  /** Label every n-th bar on the category axis (and the last one). */
  labelEvery?: number;
  /** The category axis' title. */
  axis?: string;
  /** What a bar without a value says. */
  empty?: string;
  /** Values are counts: no gridline at a fraction. */
  whole?: boolean;
  /** A dashed line across the bars at a value of the whole (an overall percentile, say), null for none. */
  reference?: Bar;
}

/** Vertical bars over a category axis: one per minute of the hour, say. */
export function ColumnChart(props: ColumnChartProps) {
  const format = props.format ?? figure;
  const width = 720;
  const height = 210;
  const left = 66;
  const right = 10;
  const top = 14;
  const bottom = 40;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const reference = props.reference?.value ?? null;
  const values = [...props.bars.map((b) => b.value ?? 0), reference ?? 0];
  const ceiling = niceCeiling(Math.max(0, ...values));
  const slot = plotW / Math.max(1, props.bars.length);
  const barW = Math.max(1, slot * 0.78);
  const y = (v: number) => round(top + plotH - (v / ceiling) * plotH);
  const every = props.labelEvery ?? 1;
  const last = props.bars.length - 1;

  return (
    <svg
      class="chart"
      role="img"
      aria-label={props.label}
      viewBox={`0 0 ${width} ${height}`}
      width="100%"
      preserveAspectRatio="xMinYMin meet"
    >
      {ticksTo(ceiling, props.whole ?? false).map((tick) => (
        <g>
          <line x1={left} x2={width - right} y1={y(tick)} y2={y(tick)} stroke="#e6e8ec" />
          <text x={left - 6} y={y(tick) + 4} text-anchor="end" {...fontProps}>
            {format(tick)}
          </text>
        </g>
      ))}
      <text
        x={10}
        y={top + plotH / 2}
        text-anchor="middle"
        transform={`rotate(-90 10 ${top + plotH / 2})`}
        {...fontProps}
      >
        {props.unit}
      </text>
      {props.bars.map((bar, i) => {
        const x = round(left + i * slot + (slot - barW) / 2);
        const h = bar.value === null ? 0 : round(top + plotH - y(bar.value));
        return (
          <g data-key={bar.key} data-value={bar.value === null ? undefined : String(bar.value)}>
            <title>
              {bar.label}: {bar.value === null ? (props.empty ?? 'no data') : format(bar.value)}
            </title>
            <rect x={x} y={top} width={round(barW)} height={plotH} fill="transparent" />
            <rect x={x} y={round(top + plotH - h)} width={round(barW)} height={h} fill={props.color} />
            {(i % every === 0 || i === last) && (
              <text x={round(x + barW / 2)} y={top + plotH + 14} text-anchor="middle" {...fontProps}>
                {bar.label}
              </text>
            )}
          </g>
        );
      })}
      <line x1={left} x2={width - right} y1={top + plotH} y2={top + plotH} stroke="#8c96a3" />
      {props.reference && reference !== null && (
        <g data-key={props.reference.key} data-value={String(reference)}>
          <title>
            {props.reference.label}: {format(reference)}
          </title>
          <line
            x1={left}
            x2={width - right}
            y1={y(reference)}
            y2={y(reference)}
            stroke="#b3261e"
            stroke-width="1.5"
            stroke-dasharray="6 4"
          />
          <text x={width - right} y={y(reference) - 4} text-anchor="end" {...fontProps} fill="#b3261e">
            {props.reference.label} {format(reference)}
          </text>
        </g>
      )}
      {props.axis && (
        <text x={left + plotW / 2} y={height - 4} text-anchor="middle" {...fontProps}>
          {props.axis}
        </text>
      )}
    </svg>
  );
}

interface BarListProps {
  label: string;
  rows: BarRow[];
  /** One per value of a row, in the same order; with two or more, a legend is drawn. */
  series: Series[];
  format?: (value: number) => string;
  /** The value axis' title. */
  axis: string;
  /** Drawn in place of the bars when there are no rows. */
  none: string;
  /** What a value that could not be read says. */
  empty?: string;
  /** Values are counts: no gridline at a fraction. */
  whole?: boolean;
}

/** Horizontal bars, a row per category and a bar per series: refusals by code, depth by partition. */
export function BarList(props: BarListProps) {
  const format = props.format ?? figure;
  const width = 720;
  const left = 170;
  const right = 60;
  const legend = props.series.length > 1 ? 22 : 0;
  const top = 8 + legend;
  const barH = 12;
  const gap = 3;
  const rowH = props.series.length * (barH + gap) + 6;
  const plotW = width - left - right;
  const plotH = Math.max(1, props.rows.length) * rowH;
  const height = top + plotH + 34;
  const max = niceCeiling(Math.max(0, ...props.rows.flatMap((r) => r.values.map((v) => v ?? 0))));
  const x = (v: number) => round(left + (v / max) * plotW);

  return (
    <svg
      class="chart"
      role="img"
      aria-label={props.label}
      viewBox={`0 0 ${width} ${height}`}
      width="100%"
      preserveAspectRatio="xMinYMin meet"
    >
      {legend > 0 &&
        props.series.map((s, i) => (
          <g>
            <rect x={left + i * 200} y={6} width={12} height={12} fill={s.color} />
            <text x={left + i * 200 + 18} y={16} {...fontProps}>
              {s.name}
            </text>
          </g>
        ))}
      {ticksTo(max, props.whole ?? false).map((tick) => (
        <g>
          <line x1={x(tick)} x2={x(tick)} y1={top} y2={top + plotH} stroke="#e6e8ec" />
          <text x={x(tick)} y={top + plotH + 14} text-anchor="middle" {...fontProps}>
            {format(tick)}
          </text>
        </g>
      ))}
      {props.rows.length === 0 && (
        <text x={left + 8} y={top + rowH / 2 + 4} {...fontProps}>
          {props.none}
        </text>
      )}
      {props.rows.map((row, r) => {
        const rowTop = top + r * rowH + 3;
        return (
          <g>
            <text x={left - 8} y={rowTop + (rowH - 6) / 2 + 4} text-anchor="end" font-size="12" fill="#1d232b">
              {row.label}
            </text>
            {props.series.map((s, i) => {
              const value = row.values[i] ?? null;
              const barY = rowTop + i * (barH + gap);
              return (
                <g data-key={row.key} data-series={s.name} data-value={value === null ? undefined : String(value)}>
                  <title>
                    {row.label}, {s.name}: {value === null ? (props.empty ?? 'no data') : format(value)}
                  </title>
                  <rect x={left} y={barY} width={plotW} height={barH} fill="transparent" />
                  <rect x={left} y={barY} width={value ? round(x(value) - left) : 0} height={barH} fill={s.color} />
                  <text x={(value ? x(value) : left) + 4} y={barY + barH - 2} {...fontProps}>
                    {value === null ? '—' : format(value)}
                  </text>
                </g>
              );
            })}
          </g>
        );
      })}
      <line x1={left} x2={left} y1={top} y2={top + plotH} stroke="#8c96a3" />
      <text x={left + plotW / 2} y={height - 4} text-anchor="middle" {...fontProps}>
        {props.axis}
      </text>
    </svg>
  );
}
