/** @jsxImportSource hono/jsx */
import { Layout } from '../views.tsx';

/** A refused or failed request, as a page for a browser (an API client gets the API's JSON error). */
export function ErrorPage(props: { status: number; message: string }) {
  return (
    <Layout title={`Error ${props.status}`}>
      <h1>{props.status === 404 ? 'Not found' : `Something went wrong (${props.status})`}</h1>
      <p>{props.message}</p>
      <p>
        <a href="/admin">Back to the overview</a>
      </p>
    </Layout>
  );
}
