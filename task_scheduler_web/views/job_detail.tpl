% rebase('base.tpl')
<article data-testid="job-detail" data-job-id="{{job['id']}}" data-state="{{job['state']}}">
  <div class="title-row">
    <div>
      <p class="crumbs"><a href="/jobs">{{t('nav.jobs')}}</a> /</p>
      <h1><span class="mono">{{job['id']}}</span></h1>
      % if job.get('description'):
      <p class="lead">{{job['description']}}</p>
      % end
    </div>
    <div class="title-actions" data-live-region="job-actions">
      % include('_job_actions.tpl', job=job, next=here)
      % if h['can']('admin'):
      <a class="btn" href="/jobs/{{job['id']}}/edit" data-testid="action-edit">{{t('action.edit')}}</a>
      <a class="btn" href="/jobs/new?clone={{job['id']}}" data-testid="action-clone">{{t('action.clone')}}</a>
      % end
      <a class="btn" href="/jobs/{{job['id']}}/yaml" download="{{job['id']}}.yaml" data-testid="action-export">{{t('action.export')}}</a>
    </div>
  </div>
  <div class="grid-2">
    <section class="panel" data-live-region="job-overview">
      <h2>{{t('job.overview')}}</h2>
      <dl class="facts">
        <dt>{{t('job.state')}}</dt><dd>
          % include('_badge.tpl', status=job['state'], kind='state')
          % include('_sla_badges.tpl', run=job.get('last_run'))
        </dd>
        <dt>{{t('job.kind')}}</dt><dd>{{h['word']('kind', job['kind'])}}</dd>
        <dt>{{t('job.trigger')}}</dt><dd class="mono">{{h['trigger'](job)}}</dd>
        <dt>{{t('job.source')}}</dt><dd>{{h['word']('source', job['source'])}}</dd>
        % if where:
        <dt>{{t('job.defined_at')}}</dt><dd class="mono" data-testid="defined-at">{{where['path']}}:{{where['line']}}</dd>
        % end
        % if job['kind'] != 'heartbeat':
        <dt>{{t('job.max_instances')}}</dt><dd>{{job.get('max_instances')}}</dd>
        <dt>{{t('job.timeout')}}</dt><dd>{{t('form.none') if job.get('timeout') is None else t('duration.s', n=job['timeout'])}}</dd>
        % end
        % include('_job_links.tpl')
        % if job.get('run_on'):
        <dt>{{t('job.run_on')}}</dt><dd class="mono">{{', '.join(job['run_on'])}}</dd>
        % end
        % if job.get('sla'):
        <dt>{{t('job.sla')}}</dt><dd class="mono" data-testid="job-sla">{{' · '.join(f'{k}: {v}' for k, v in job['sla'].items())}}</dd>
        % end
        % if job['kind'] == 'heartbeat':
        <dt>{{t('job.ping')}}</dt><dd class="mono small" data-testid="job-ping">{{t('job.ping_hint', url='/api/jobs/' + job['id'] + '/ping', id=job['id'])}}</dd>
        % end
        % if job.get('tags'):
        <dt>{{t('job.tags')}}</dt><dd>
          % for tag in job['tags']:
          <span class="tag">{{tag}}</span>
          % end
        </dd>
        % end
        <dt>{{t('job.updated')}}</dt><dd>
          % include('_time.tpl', iso=job.get('updated_at'))
        </dd>
      </dl>
      % if job['source'] == 'yaml':
      <p class="note">{{t('job.yaml_note')}}</p>
      % end
    </section>
    <section class="panel" data-live-region="job-next">
      <h2>{{t('job.next_ping') if job['kind'] == 'heartbeat' else t('job.next_fires')}}</h2>
      % if job.get('calendars'):
      <p class="muted small" data-testid="job-calendars">{{t('job.calendar_note')}}
        % for name in job['calendars']:
        <a class="mono" href="/calendars/{{name}}" data-testid="calendar-link">{{name}}</a>
        % end
      </p>
      % end
      % if job.get('next_run_times'):
      <ol class="times" data-testid="next-fires">
        % for iso in job.get('next_fire_times') or job['next_run_times']:
        <li>
          % include('_time.tpl', iso=iso)
          <span class="muted small">{{h['ago'](iso)}}</span>
        </li>
        % end
      </ol>
      % elif job['state'] == 'paused':
      <p class="muted">{{t('job.paused_note')}}</p>
      % else:
      <p class="muted">{{t('job.no_fires')}}</p>
      % end
    </section>
  </div>
  % declared = job['definition'].get('params') or {}
  % if declared and job['kind'] != 'heartbeat' and h['can']('operator'):
  <section class="panel">
    <h2>{{t('job.declared_params')}}</h2>
    <form method="post" action="/jobs/{{job['id']}}/run" data-testid="run-params-form">
      % include('_csrf.tpl')
      <input type="hidden" name="next" value="{{here}}">
      % for name, spec in declared.items():
      <div class="field" data-testid="run-param" data-name="{{name}}">
        <label for="p-{{name}}" class="mono">{{name}}</label>
        % if spec.get('choices'):
        <select id="p-{{name}}" name="param.{{name}}">
          % for choice in spec['choices']:
          <option value="{{choice}}" {{'selected' if choice == spec.get('default') else ''}}>{{choice}}</option>
          % end
        </select>
        % elif spec.get('default') is None:
        <input id="p-{{name}}" name="param.{{name}}" class="mono" pattern="{{spec.get('pattern') or '.*'}}" required>
        % else:
        <input id="p-{{name}}" name="param.{{name}}" class="mono" pattern="{{spec.get('pattern') or '.*'}}" value="{{spec['default']}}">
        % end
        % if spec.get('description'):
        <p class="muted small">{{spec['description']}}</p>
        % end
      </div>
      % end
      <button type="submit" class="btn btn-primary" data-testid="action-run-declared">{{t('job.declared_params_go')}}</button>
    </form>
  </section>
  % end
  % if job['kind'] != 'heartbeat' and h['can']('admin'):
  <section class="panel" data-testid="run-with-params">
    <details>
      <summary>{{t('job.run_params')}}</summary>
      <form method="post" action="/jobs/{{job['id']}}/run">
        % include('_csrf.tpl')
        <input type="hidden" name="next" value="{{here}}">
        <p class="muted small">{{t('job.run_params_hint')}}</p>
        <div class="field">
          <label for="f-run_args">{{t('field.run_args')}}</label>
          <input id="f-run_args" name="run_args" class="mono" placeholder="{{h['args'](job.get('args'))}}">
        </div>
        % if job['kind'] == 'python':
        <div class="field">
          <label for="f-run_kwargs">{{t('field.run_kwargs')}}</label>
          <textarea id="f-run_kwargs" name="run_kwargs" class="mono" rows="3" placeholder="{{h['json'](job['kwargs']) if job.get('kwargs') else ''}}"></textarea>
        </div>
        % else:
        <div class="field">
          <label for="f-run_env">{{t('field.run_env')}}</label>
          <textarea id="f-run_env" name="run_env" class="mono" rows="3"></textarea>
        </div>
        % end
        <button type="submit" class="btn btn-primary" data-testid="action-run-params">{{t('job.run_params_go')}}</button>
      </form>
    </details>
  </section>
  % end
  % if get('graph'):
  % include('_step_graph.tpl')
  % end
  % include('_duration_chart.tpl')
  <section class="panel">
    <h2>{{t('job.definition')}}</h2>
    <pre class="pre" data-testid="job-definition">{{definition}}</pre>
  </section>
  <section class="panel" data-live-region="job-runs">
    <h2>{{t('job.runs')}}</h2>
    % include('_runs_table.tpl')
  </section>
  % if job['source'] == 'api' and h['can']('admin'):
  <section class="panel danger-zone">
    <details>
      <summary>{{t('job.delete_summary')}}</summary>
      <form method="post" action="/jobs/{{job['id']}}/delete">
        % include('_csrf.tpl')
        <p>{{t('job.delete_note')}}</p>
        <button type="submit" class="btn btn-danger" data-testid="action-delete">{{t('job.delete', id=job['id'])}}</button>
      </form>
    </details>
  </section>
  % end
</article>
