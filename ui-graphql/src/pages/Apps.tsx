import { useQuery } from 'urql';
import { graphql } from '../gql';

const AppCatalogue = graphql(`
  query AppCatalogue {
    apps {
      name
      version
      description
      actions {
        name
        description
        parameters {
          name
          required
          parallelizable
          schema
        }
      }
    }
  }
`);

/** The app catalogue: every app, its actions, and each action's parameters and schemas. */
export function Apps() {
  const [{ data, error }] = useQuery({ query: AppCatalogue });
  return (
    <section>
      {error && <p role="alert" className="error">{error.message}</p>}
      {data?.apps.map((app) => (
        <article key={`${app.name}@${app.version}`} aria-label={`${app.name} ${app.version}`}>
          <h2>
            {app.name} <small>{app.version}</small>
          </h2>
          {app.description && <p>{app.description}</p>}
          <dl>
            {app.actions.map((action) => (
              <div key={action.name}>
                <dt>{action.name}</dt>
                <dd>
                  {action.description}
                  {action.parameters.length > 0 && (
                    <ul>
                      {action.parameters.map((p) => (
                        <li key={p.name}>
                          <code>{p.name}</code>
                          {p.required ? ' (required)' : ''}
                          {p.parallelizable ? ' (parallelizable)' : ''}
                          {p.schema != null && <code className="schema"> {JSON.stringify(p.schema)}</code>}
                        </li>
                      ))}
                    </ul>
                  )}
                </dd>
              </div>
            ))}
          </dl>
        </article>
      ))}
    </section>
  );
}
