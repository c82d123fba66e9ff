// Errors as JSON-friendly values for Playwright's page.evaluate (a thrown Error does not
// survive the trip to Python with its name and fields): shared by the test bundles.

export interface ErrorInfo {
  name: string;
  message: string;
  url?: string;
  status?: number;
}

export function describeError(error: unknown): ErrorInfo {
  if (error instanceof Error) {
    const extra = error as Error & { url?: string; status?: number };
    return { name: error.name, message: error.message, url: extra.url, status: extra.status };
  }
  return { name: typeof error, message: String(error) };
}
