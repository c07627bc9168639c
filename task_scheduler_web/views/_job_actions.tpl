<div class="actions">
  % if h['can']('operator'):
  % if job['kind'] != 'heartbeat':
  <form method="post" action="/jobs/{{job['id']}}/run">
    % include('_csrf.tpl')
    <input type="hidden" name="next" value="{{next}}">
    <button type="submit" class="btn btn-primary" data-testid="action-run" data-action="run" title="{{t('action.run_title', id=job['id'])}}">{{t('action.run')}}</button>
  </form>
  % end
  % if job['state'] == 'paused':
  <form method="post" action="/jobs/{{job['id']}}/resume">
    % include('_csrf.tpl')
    <input type="hidden" name="next" value="{{next}}">
    <button type="submit" class="btn" data-testid="action-resume" data-action="resume" title="{{t('action.resume_title', id=job['id'])}}">{{t('action.resume')}}</button>
  </form>
  % elif job['state'] == 'scheduled':
  <form method="post" action="/jobs/{{job['id']}}/pause">
    % include('_csrf.tpl')
    <input type="hidden" name="next" value="{{next}}">
    <button type="submit" class="btn" data-testid="action-pause" data-action="pause" title="{{t('action.pause_title', id=job['id'])}}">{{t('action.pause')}}</button>
  </form>
  % end
  % end
</div>
