// Generated images kept in this browser (IndexedDB, database "webkiln-gallery"): the
// PNG bytes as the engine made them (with their "parameters" text chunk), what was asked
// for, and when (through LocalStore).

import { LocalStore, newRecordId } from "./local_store";

export interface ImageParameters {
  model: string;
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidanceScale: number;
  seed: number;
  scheduler: string;
  width: number;
  height: number;
}

export interface GalleryItem {
  id: string;
  created: number;
  png: Blob;
  parameters: ImageParameters;
}

/** A new gallery item's id. */
export function newGalleryId(created: number): string {
  return newRecordId(created);
}

/** The images, newest first (IndexedDB database "webkiln-gallery"). */
export type GalleryStore = LocalStore<GalleryItem>;

export function openGallery(): Promise<GalleryStore> {
  return LocalStore.open<GalleryItem>({ database: "webkiln-gallery", store: "images", order: "created" });
}
