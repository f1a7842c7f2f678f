/**
 * The chat's metrics and traces, through OpenTelemetry: `@effect/opentelemetry`
 * exports Effect's metrics (effect-channels' among them) to OpenTelemetry's
 * Prometheus exporter, whose serializer answers `GET /metrics`; its tracer,
 * when traces are asked for, receives the socket's spans.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import type { SpanProcessor } from "@opentelemetry/sdk-trace-base"
import { BatchSpanProcessor, ConsoleSpanExporter, NoopSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"

/**
 * Where spans go: nowhere (no tracer is installed, so the socket makes no
 * span), to the console, or made and discarded (what the benchmark measures:
 * the cost of making them, without an exporter's).
 */
export type Traces = "none" | "console" | "discard"

export const isTraces = (value: string): value is Traces =>
  value === "none" || value === "console" || value === "discard"

export const make = (traces: Traces) => {
  // Collected on each scrape, not served on a port of its own.
  const exporter = new PrometheusExporter({ preventServerStart: true })
  const serializer = new PrometheusSerializer()

  const spanProcessor: SpanProcessor | undefined = traces === "console"
    ? new BatchSpanProcessor(new ConsoleSpanExporter())
    : traces === "discard"
    ? new NoopSpanProcessor()
    : undefined

  const layer = NodeSdk.layer(() => ({
    resource: { serviceName: "effect-channels-chat" },
    metricReader: exporter,
    spanProcessor
  }))

  const scrape = Effect.promise(() => exporter.collect()).pipe(
    Effect.map(({ resourceMetrics }) =>
      HttpServerResponse.text(serializer.serialize(resourceMetrics), {
        contentType: "text/plain; version=0.0.4; charset=utf-8"
      })
    )
  )

  /** `GET /metrics`, in Prometheus' text format. */
  const route = HttpRouter.get("/metrics", scrape)

  return { layer, route }
}
