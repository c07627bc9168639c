  <section class="panel" data-testid="run-steps">
    <div class="panel-head">
      <h2>{{t('run.steps')}}</h2>
      % if run['status'] not in ('queued', 'running') and any(s['status'] not in ('succeeded', 'pending') for s in run['steps']):
      <form method="post" action="/runs/{{run['id']}}/retry">
        % include('_csrf.tpl')
        <button type="submit" class="btn" data-testid="action-retry">{{t('run.retry_steps')}}</button>
      </form>
      % end
    </div>
    <p class="muted small">{{t('run.steps_note')}}</p>
    <div class="table-wrap">
    <table class="table">
      <thead><tr><th>{{t('run.step')}}</th><th>{{t('run.status')}}</th><th>{{t('run.step_after')}}</th><th>{{t('run.attempt')}}</th><th>{{t('run.node')}}</th><th>{{t('run.started')}}</th><th>{{t('run.finished')}}</th><th>{{t('run.step_output')}}</th></tr></thead>
      <tbody>
      % for step in run['steps']:
        <tr data-testid="step-row" data-step-id="{{step['step_id']}}" data-status="{{step['status']}}">
          <td data-label="{{t('run.step')}}" class="mono">
            % if step['run_id']:
            <a href="/runs/{{step['run_id']}}">{{step['step_id']}}</a>
            % else:
            {{step['step_id']}}
            % end
          </td>
          <td data-label="{{t('run.status')}}">
            % if step['status'] == 'pending':
            <span class="muted">{{t('run.step_pending')}}</span>
            % else:
            % include('_badge.tpl', status=step['status'])
            % end
            % if step.get('error') and step['status'] == 'skipped':
            <br><span class="muted small">{{h['message'](step['error'])}}</span>
            % end
          </td>
          <td data-label="{{t('run.step_after')}}" class="mono small">{{', '.join(step['after']) or '—'}}</td>
          <td data-label="{{t('run.attempt')}}">{{step['attempt'] or '—'}}</td>
          <td data-label="{{t('run.node')}}" class="mono small">{{step['node'] or '—'}}</td>
          <td data-label="{{t('run.started')}}">
            % include('_time.tpl', iso=step['started_at'])
          </td>
          <td data-label="{{t('run.finished')}}">
            % include('_time.tpl', iso=step['finished_at'])
          </td>
          <td data-label="{{t('run.step_output')}}" class="mono small">{{step['output'] or ''}}</td>
        </tr>
      % end
      </tbody>
    </table>
    </div>
  </section>
