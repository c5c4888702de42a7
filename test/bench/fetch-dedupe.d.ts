// fetch-dedupe 3 ships no types: the part of its documented API the bench calls.
declare module "fetch-dedupe" {
  export interface DedupeOptions {
    responseType?: "json" | "text" | "arrayBuffer" | "blob" | ((response: Response) => string);
    requestKey?: string;
    dedupe?: boolean;
  }
  export function fetchDedupe(
    input: RequestInfo | URL,
    init?: RequestInit,
    options?: DedupeOptions,
  ): Promise<Response & { data: unknown }>;
}
