// A status word (member, instance, operation or run state), coloured by what it means.

/** `status` in the colour of its class (`status-<lowercase>`). */
export function StatusText({ status }: { status: string }) {
  return <span className={`status status-${status.toLowerCase().replace(/[^a-z]/g, '')}`}>{status}</span>;
}
