// A model load's progress as the engine reports it: one LoadProgressEvent per update,
// with bytes, files and an ETA from the network rate so far.

import type { LoadProgressEvent } from "./api";
import { formatBytes, type LoadProgress } from "../storage";

/** Progress of a load, as one event: bytes, files, and an ETA from the network rate so far. */
export class ProgressTracker {
  private readonly started = performance.now();

  constructor(
    private readonly model: string,
    private readonly emit?: (event: LoadProgressEvent) => void,
  ) {}

  files(p: LoadProgress): void {
    const seconds = (performance.now() - this.started) / 1000;
    const rate = seconds > 0 ? p.networkBytes / seconds : 0;
    const left = p.totalBytes - p.loadedBytes;
    const etaSeconds = p.networkBytes > 0 && rate > 0 ? left / rate : null;
    const from = p.networkBytes > 0 ? "Downloading" : "Reading from cache";
    const eta = etaSeconds !== null && left > 0 ? `, about ${Math.ceil(etaSeconds)} s left` : "";
    this.send({
      stage: "download",
      loadedBytes: p.loadedBytes,
      totalBytes: p.totalBytes,
      filesDone: p.filesDone,
      totalFiles: p.totalFiles,
      cachedBytes: p.cachedBytes,
      networkBytes: p.networkBytes,
      etaSeconds,
      text: `${from} ${this.model}: ${formatBytes(p.loadedBytes)} of ${formatBytes(p.totalBytes)} (${p.filesDone}/${p.totalFiles} files)${eta}`,
    });
  }

  stage(stage: "initialize" | "ready", last: LoadProgressEvent | null, text: string): void {
    this.send({
      stage,
      loadedBytes: last?.loadedBytes ?? 0,
      totalBytes: last?.totalBytes ?? 0,
      filesDone: last?.filesDone ?? 0,
      totalFiles: last?.totalFiles ?? 0,
      cachedBytes: last?.cachedBytes ?? 0,
      networkBytes: last?.networkBytes ?? 0,
      etaSeconds: 0,
      text,
    });
  }

  last: LoadProgressEvent | null = null;

  private send(event: Omit<LoadProgressEvent, "model">): void {
    const full = { model: this.model, ...event };
    this.last = full;
    this.emit?.(full);
  }
}
