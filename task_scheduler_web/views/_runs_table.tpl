% if runs:
<div class="table-wrap">
<table class="table runs-table">
  <thead>
    <tr><th>Run</th><th>Job</th><th>Status</th><th>Trigger</th><th>Started</th><th>Duration</th><th>Exit</th><th>Node</th></tr>
  </thead>
  <tbody>
  % for run in runs:
    <tr data-testid="run-row" data-run-id="{{run['id']}}">
      <td data-label="Run"><a href="/runs/{{run['id']}}" class="mono">{{run['id']}}</a></td>
      <td data-label="Job"><a href="/jobs/{{run['job_id']}}">{{run['job_id']}}</a></td>
      <td data-label="Status">
        % include('_badge.tpl', status=run['status'])
      </td>
      <td data-label="Trigger">{{run['trigger']}}</td>
      <td data-label="Started">
        % include('_time.tpl', iso=run.get('started_at') or run.get('scheduled_at'))
      </td>
      <td data-label="Duration">{{h['duration'](run.get('duration_s'))}}</td>
      <td data-label="Exit">{{'—' if run.get('exit_code') is None else run['exit_code']}}</td>
      <td data-label="Node" class="mono small">{{run.get('node') or '—'}}</td>
    </tr>
  % end
  </tbody>
</table>
</div>
% include('_pager.tpl')
% else:
<p class="empty">No runs yet.</p>
% end
