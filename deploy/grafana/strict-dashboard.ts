// Strict dashboard type for the dashboards in dashboards/, built from the
// TypeScript types that Grafana publishes in @grafana/schema.
//
// deploy/grafana/validate-dashboards.mjs writes each dashboard JSON into a .ts
// file as `const dashboard = <json> satisfies StrictDashboard;` and compiles it
// with `tsc --strict --noEmit`, so that every key and value is checked against
// Grafana's schema (object literals get excess-property checks: a misspelt or
// unknown key is an error).
//
// On top of Grafana's generic `Panel` (whose `options` and `fieldConfig.custom`
// are free-form), each panel type allowed here gets its plugin's own published
// Options and FieldConfig types, and only recent panel types are allowed:
// timeseries, stat, table, state-timeline and row (no "graph", "singlestat").
import type { Dashboard, DataQuery, FieldConfig, FieldConfigSource, Panel, RowPanel } from '@grafana/schema';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as Table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as StateTimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';

// JSON holds an enum's value, not the TypeScript enum: turn every string enum
// into the union of its string values (numeric enums accept their numbers).
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

// A Prometheus query as Grafana's Prometheus data source stores it (the fields
// of its PromQuery model that these dashboards use), on Grafana's DataQuery.
export interface PromTarget extends DataQuery {
  expr: string;
  legendFormat?: string;
  format?: 'time_series' | 'table' | 'heatmap';
  instant?: boolean;
  range?: boolean;
  interval?: string;
  editorMode?: 'code' | 'builder';
  exemplar?: boolean;
}

type FieldConfigFor<Custom> = Omit<FieldConfigSource, 'defaults'> & {
  defaults: Omit<FieldConfig, 'custom'> & { custom?: Partial<Custom> };
};

type PanelOf<Type extends string, Options, Custom> = Omit<Panel, 'type' | 'options' | 'fieldConfig' | 'targets'> & {
  type: Type;
  title: string;
  options: Partial<Options>;
  fieldConfig: FieldConfigFor<Custom>;
  targets: PromTarget[];
};

export type TimeSeriesPanel = PanelOf<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>;
export type StatPanel = PanelOf<'stat', Stat.Options, Record<string, never>>;
export type TablePanel = PanelOf<'table', Table.Options, Table.FieldConfig>;
export type StateTimelinePanel = PanelOf<'state-timeline', StateTimeline.Options, StateTimeline.FieldConfig>;
export type Row = Omit<RowPanel, 'panels'> & { type: 'row'; panels: [] };

export type StrictPanel = TimeSeriesPanel | StatPanel | TablePanel | StateTimelinePanel | Row;

export type StrictDashboard = Json<
  Omit<Dashboard, 'panels' | 'id'> & {
    id: null;
    uid: string;
    title: string;
    panels: StrictPanel[];
  }
>;
